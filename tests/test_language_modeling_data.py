import numpy as np
import pytest
import torch

from lightning_llm.data.corpus import FileCorpus
from lightning_llm.data.language_modeling import LanguageModelingDataModule
from lightning_llm.data.token_cache import build_or_load
from lightning_llm.data.windows import FixedWindows, ShuffledWindowBatches
from lightning_llm.errors import UserError


def make_dm(corpus, **kwargs) -> LanguageModelingDataModule:
    kwargs = {"block_size": 16, "batch_size": 4, "cache_dir": "cache", **kwargs}
    return LanguageModelingDataModule(path=str(corpus), **kwargs)


def test_windows_are_shifted_by_one_and_shaped(tiny_corpus):
    dm = make_dm(tiny_corpus)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    text = dm.tokenizer.decode(torch.cat([x[0], y[0, -1:]]).tolist())
    assert text in tiny_corpus.read_text()


def test_training_batches_are_reproducible_from_the_seed(tiny_corpus):
    first = [x for x, _ in make_dm(tiny_corpus, seed=1).train_dataloader()]
    again = [x for x, _ in make_dm(tiny_corpus, seed=1).train_dataloader()]
    other = [x for x, _ in make_dm(tiny_corpus, seed=2).train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_an_epoch_tiles_the_tokens_once_in_shuffled_order():
    tokens = np.arange(1000)
    ds = ShuffledWindowBatches(tokens, block_size=10, batch_size=4, seed=0)
    epoch = [x for x, _ in ds]
    assert len(epoch) == len(ds) == 24  # 98 or 99 windows of 11 tokens, 4 per batch
    starts = torch.cat([x[:, 0] for x in epoch])
    assert len(set(starts.tolist())) == len(starts)  # no window twice in an epoch
    phase = starts[0].item() % 10
    assert all(s % 10 == phase for s in starts.tolist())  # windows tile the tokens from one phase
    assert starts.tolist() != sorted(starts.tolist())  # shuffled
    next_epoch = ShuffledWindowBatches(tokens, 10, 4, seed=0, start_batch=lambda: 24)
    assert not torch.equal(next(iter(next_epoch))[0], epoch[0])


def test_batches_follow_the_global_batch_index_and_ranks_split_the_windows():
    tokens = np.arange(1000)
    ds = ShuffledWindowBatches(tokens, 10, 4, seed=0)
    first_epoch = [x for x, _ in ds]
    resumed = [x for x, _ in ShuffledWindowBatches(tokens, 10, 4, seed=0, start_batch=lambda: 3)]
    assert len(resumed) == len(first_epoch)  # an epoch's worth, starting where the run stopped
    assert all(torch.equal(a, b) for a, b in zip(resumed[: len(resumed) - 3], first_epoch[3:], strict=True))
    ranks = [ShuffledWindowBatches(tokens, 10, 4, seed=0, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == 12
    rank_starts = [set(torch.cat([x[:, 0] for x, _ in r]).tolist()) for r in ranks]
    assert not rank_starts[0] & rank_starts[1]  # the ranks share no window


def test_validation_windows_are_fixed_and_cover_the_split():
    tokens = np.arange(1000)
    ds = FixedWindows(tokens, block_size=10, count=20)
    assert len(ds) == 20
    x, y = ds.__getitems__([0, 19])
    assert x[0, 0].item() == 0 and y[1, -1].item() == 999
    assert torch.equal(ds[5][0], FixedWindows(tokens, 10, 20)[5][0])


def test_train_and_val_splits_do_not_overlap(tiny_corpus):
    dm = make_dm(tiny_corpus, val_fraction=0.2)
    n = len(dm.cache.tokens)
    assert len(dm.train_tokens) + len(dm.val_tokens) == n
    assert len(dm.val_tokens) == pytest.approx(0.2 * n, abs=1)


def test_block_size_larger_than_validation_split_is_refused(tiny_corpus):
    with pytest.raises(UserError, match="validation split has .* tokens"):
        make_dm(tiny_corpus, block_size=5000).vocab_size  # noqa: B018


def test_batch_larger_than_the_training_windows_is_refused(tiny_corpus):
    with pytest.raises(UserError, match="batch_size 5000 is larger than the .* training windows"):
        make_dm(tiny_corpus, batch_size=5000).vocab_size  # noqa: B018


@pytest.mark.parametrize(
    "kwargs, message", [({"tokenizer": "word"}, "tokenizer"), ({"val_fraction": 1.5}, "val_fraction")]
)
def test_bad_settings_are_refused(tiny_corpus, kwargs, message):
    with pytest.raises(UserError, match=message):
        make_dm(tiny_corpus, **kwargs)


class _FakeHubDataset(list):
    column_names = ["text", "id"]
    _fingerprint = "fake-wikitext-v1"


def test_hub_dataset_is_read_through_the_datasets_package(monkeypatch):
    import sys
    import types

    rows = _FakeHubDataset({"text": f"line {i} of a hub corpus", "id": i} for i in range(400))
    calls = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, config, split: calls.append((name, config, split)) or rows
    monkeypatch.setitem(sys.modules, "datasets", fake)
    dm = LanguageModelingDataModule("hub:wikitext:raw:train", block_size=16, cache_dir="cache")
    assert dm.vocab_size > 10
    assert calls == [("wikitext", "raw", "train")]
    assert dm.tokenizer.decode(dm.cache.tokens[:24].tolist()) == "line 0 of a hub corpus\nl"
    with pytest.raises(UserError, match=r"no column .body. \(it has .text., .id.\); set --data\.text_column"):
        LanguageModelingDataModule("hub:wikitext:raw:train", text_column="body", cache_dir="cache").vocab_size  # noqa: B018


def test_hub_dataset_without_the_extra_names_the_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"lightning-llm\[hub\]"):
        LanguageModelingDataModule("hub:wikitext:train", cache_dir="cache").vocab_size  # noqa: B018


# --- one column of a table as pretraining text ---
REVIEWS = [f"review number {i} says the film is {'good' if i % 2 else 'dull'} ." for i in range(60)]


def write_reviews_tsv(path, header="sentence\tlabel", rows=None):
    rows = [f"{text} \t{i % 2}" for i, text in enumerate(REVIEWS)] if rows is None else rows
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def corpus_text(files, column="sentence") -> str:
    return "".join(FileCorpus(files, text_column=column).texts())


def test_a_table_gives_only_its_text_column_one_row_per_line(tmp_path):
    tsv = write_reviews_tsv(tmp_path / "train.tsv")
    dm = make_dm(tsv, text_column="sentence")
    text = dm.tokenizer.decode(dm.cache.tokens.tolist())
    # each sentence on its line (SST-2 keeps a trailing space), then the blank line that ends every file
    assert text == "".join(f"{review} \n" for review in REVIEWS) + "\n"
    assert "sentence" not in text and "label" not in text and "\t" not in text  # no header, no labels


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_tables_mix_with_text_files_in_list_order(tmp_path, tiny_corpus, suffix):
    table = tmp_path / f"reviews{suffix}"
    if suffix == ".csv":
        table.write_text('id,sentence\n1,"a film, with a comma"\n2,plain words\n', encoding="utf-8")
    else:
        table.write_text('{"id": 1, "sentence": "a film, with a comma"}\n\n{"sentence": "plain words"}\n')
    text = corpus_text([tiny_corpus, table])
    assert text == tiny_corpus.read_text() + "\n" + "a film, with a comma\nplain words\n" + "\n"
    dm = LanguageModelingDataModule(
        path=[str(table), str(tiny_corpus)],
        text_column="sentence",
        block_size=16,
        batch_size=4,
        cache_dir="cache",
    )
    assert dm.tokenizer.decode(dm.cache.tokens[:33].tolist()) == "a film, with a comma\nplain words\n"


def test_a_missing_column_is_one_error_naming_the_file_the_columns_and_the_option(tmp_path, tiny_corpus):
    tsv = write_reviews_tsv(tmp_path / "train.tsv")
    with pytest.raises(UserError) as raised:
        LanguageModelingDataModule(path=[str(tiny_corpus), str(tsv)], cache_dir="cache").vocab_size  # noqa: B018
    assert str(raised.value) == (
        f"{tsv} has no column 'text' (it has 'sentence', 'label'); set --data.text_column to one of those."
    )


def test_the_fingerprint_follows_the_column_of_tables_only(tmp_path, tiny_corpus):
    tsv = write_reviews_tsv(tmp_path / "train.tsv")
    assert (
        FileCorpus([tsv], text_column="sentence").fingerprint()
        != FileCorpus([tsv], text_column="label").fingerprint()
    )
    # a corpus without tables keeps the cache key it had before tables were read by column
    assert FileCorpus([tiny_corpus], text_column="a").fingerprint() == FileCorpus([tiny_corpus]).fingerprint()
    by_sentence = build_or_load(FileCorpus([tsv], text_column="sentence"), "cache", "char", 0)
    by_label = build_or_load(FileCorpus([tsv], text_column="label"), "cache", "char", 0)
    assert by_sentence.directory != by_label.directory and len(by_label.tokens) == 2 * len(REVIEWS) + 1


def not_utf8(path):
    path.write_bytes("sentence\tlabel\ngood\t1\nun film très charmant\t1\n".encode("latin-1"))


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("empty.tsv", lambda p: p.write_text(""), r"table .*empty\.tsv is empty \(no header, no rows\)"),
        ("header.tsv", lambda p: p.write_text("sentence\tlabel\n"), r"header\.tsv has a header but no rows"),
        (
            "blank.tsv",
            lambda p: p.write_text("sentence\tlabel\n \t1\n\t0\n"),
            r"column 'sentence' of .*blank\.tsv holds no text in its 2 row\(s\).*--data\.text_column",
        ),
        (
            "short.tsv",
            lambda p: p.write_text("label\tsentence\n1\tgood\n0\n"),
            r"short\.tsv line 3 has no value in column 'sentence'",
        ),
        ("latin1.tsv", not_utf8, r"latin1\.tsv line 3 is not valid UTF-8.*re-save it as UTF-8"),
        (
            "numbers.jsonl",
            lambda p: p.write_text('{"sentence": "good"}\n{"sentence": 3}\n'),
            r"numbers\.jsonl line 2 holds int 3 in column 'sentence', not text.*--data\.text_column",
        ),
    ],
)
def test_a_table_without_usable_text_is_one_error_naming_it(tmp_path, name, write, message):
    write(tmp_path / name)
    with pytest.raises(UserError, match=message):
        corpus_text([tmp_path / name])
