"""TextClassificationDataModule: reading files and hub splits, labels, tokenising, padding and grouping."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest
import torch
from bert_fixtures import WORDS, shared_sst2, sst_like_dir, tiny_bert  # noqa: F401

from lightning_llm.callbacks.prediction_writer import PredictionWriter, write_rows
from lightning_llm.data.classification import PadToLongest, TextClassificationDataModule
from lightning_llm.data.length_grouped_sampler import LengthGroupedSampler
from lightning_llm.errors import UserError
from lightning_llm.models.hf_encoder import HFTextEncoder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def data_module(folder: Path, tokenizer: Path | None = None, **kwargs) -> TextClassificationDataModule:
    """The data module with the tiny BERT's tokenizer (as the CLI gives it the backbone's)."""
    data = TextClassificationDataModule(data_dir=str(folder), **kwargs)
    data.tokenizer = HFTextEncoder(str(tokenizer)) if tokenizer else None
    return data


# Labels.


def test_string_labels_are_mapped_to_sorted_ids(tmp_path, tiny_bert):
    rows = "sentence\tlabel\ngood film\tpos\nbad film\tneg\ndull plot\tneutral\nfun story\tpos\n"
    write(tmp_path / "train.tsv", rows)
    write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\tneutral\nbad\tneg\n")
    data = data_module(tmp_path, tiny_bert)
    assert data.label_names == ["neg", "neutral", "pos"]
    assert data.num_labels == 3
    data.setup("fit")
    assert list(data.datasets["train"].labels) == [2, 0, 1, 2]
    assert list(data.datasets["val"].labels) == [1, 0]


def test_declared_labels_fix_the_order_and_numeric_labels_sort_by_value(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\na\t10\nb\t2\nc\t1\n")
    assert data_module(tmp_path).label_names == ["1", "2", "10"]
    assert data_module(tmp_path, labels=["10", "2", "1"]).label_names == ["10", "2", "1"]


def test_label_outside_declared_set_names_file_line_and_value(tmp_path, tiny_bert):
    write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\t1\nodd\t7\n")
    data = data_module(tmp_path, tiny_bert, labels=["0", "1"])
    with pytest.raises(UserError, match=r"dev\.tsv line 3: label '7' is not one of the labels"):
        data.setup("fit")


def test_regression_labels_are_numbers(tmp_path, tiny_bert):
    write(tmp_path / "train.tsv", "sentence\tscore\ngood\t4.5\nbad\t0.5\n")
    write(tmp_path / "dev.tsv", "sentence\tscore\ngood\tfive\n")
    data = data_module(tmp_path, tiny_bert, task="regression", label_column="score")
    assert (data.num_labels, data.label_names) == (1, ["score"])
    with pytest.raises(UserError, match=r"dev\.tsv line 2: label 'five' is not a number"):
        data.setup("fit")
    write(tmp_path / "dev.tsv", "sentence\tscore\ngood\t5\n")
    data = data_module(tmp_path, tiny_bert, task="regression", label_column="score")
    data.setup("fit")
    assert data.datasets["train"].labels == [4.5, 0.5]
    assert next(iter(data.val_dataloader()))["labels"].dtype == torch.float32


# Bad inputs: one UserError sentence naming the thing.


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        ({}, {}, r"data file '.*train\.tsv' does not exist"),
        (
            {"train.tsv": "text\tlabel\na\t1\nb\t0\n"},
            {},
            r"has no column 'sentence' \(it has 'text', 'label'\); set --data\.text_column",
        ),
        (
            {"train.tsv": "sentence\tlabel\na\t1\nb\t0\n"},
            {"label_column": "y"},
            r"has no column 'y'.*--data\.label_column",
        ),
        ({"train.tsv": "sentence\tlabel\n"}, {}, r"train\.tsv has no rows"),
        (
            {"train.tsv": "sentence\tlabel\na\t1\nb\n"},
            {},
            r"train\.tsv line 3 has no value in column 'label'",
        ),
        (
            {"train.tsv": "sentence\tlabel\na\t1\nb\tc\t0\n"},
            {},
            r"train\.tsv line 3 has 3 fields but the header has 2",
        ),
        (
            {"train.txt": "a\n"},
            {"train": "train.txt"},
            r"extension must be one of \.tsv, \.csv, \.jsonl",
        ),
        ({"train.tsv": "sentence\tlabel\na\t1\nb\t1\n"}, {}, r"has only the label\(s\) \['1'\]"),
    ],
)
def test_bad_training_file_is_a_user_error(tmp_path, files, kwargs, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(UserError, match=message):
        _ = data_module(tmp_path, **kwargs).num_labels


def test_empty_validation_split_and_unset_test_split(tmp_path, tiny_bert):
    write(tmp_path / "train.tsv", "sentence\tlabel\na\t1\nb\t0\n")
    write(tmp_path / "dev.tsv", "sentence\tlabel\n")
    data = data_module(tmp_path, tiny_bert)
    with pytest.raises(UserError, match=r"dev\.tsv has no rows"):
        data.setup("fit")
    with pytest.raises(UserError, match=r"no test data configured; set --data\.test\."):
        data.setup("test")


def test_batch_larger_than_the_training_texts_is_refused(tmp_path, tiny_bert):
    write(tmp_path / "train.tsv", "sentence\tlabel\na\t1\nb\t0\nc\t1\n")
    write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    with pytest.raises(UserError, match="batch_size 8 is larger than the 3 training texts"):
        data = data_module(tmp_path, tiny_bert, batch_size=8)
        data.setup("fit")
        data.train_dataloader()


def test_missing_tokenizer_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no-such-model.*does not exist"):
        HFTextEncoder(str(tmp_path / "no-such-model"))


def test_data_without_a_tokenizer_says_where_it_comes_from(sst_like_dir):
    data = data_module(sst_like_dir)
    with pytest.raises(UserError, match="has no tokenizer: it uses the model's backbone's"):
        data.setup("fit")


def test_max_length_beyond_the_backbone_limit_names_the_limit(sst_like_dir, tiny_bert):
    data = data_module(sst_like_dir, tiny_bert, max_length=100_000)
    with pytest.raises(UserError, match=r"max_length is 100000 but the backbone reads at most \d+ tokens"):
        data.setup("fit")


# Formats.


def test_csv_jsonl_and_sentence_pairs(tmp_path, tiny_bert):
    write(tmp_path / "train.csv", 'first,second,label\n"good, very good",fun,yes\nbad,"dull ""plot""",no\n')
    records = [
        {"first": "a film", "second": "the plot", "label": "yes"},
        {"first": "bad", "second": "awful", "label": 0},
    ]
    write(tmp_path / "dev.jsonl", "\n".join(json.dumps(record) for record in records) + "\n\n")
    data = data_module(
        tmp_path,
        tiny_bert,
        train="train.csv",
        val="dev.jsonl",
        text_column="first",
        text_pair_column="second",
        labels=["no", "yes", "0"],
        batch_size=2,
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    # [CLS] first [SEP] second [SEP]: the second sentence has segment id 1.
    assert batch["token_type_ids"].max() == 1
    assert sorted(data.datasets["val"].labels) == [1, 2]


def test_glue_tsv_keeps_quotes_inside_sentences(tmp_path, tiny_bert):
    write(tmp_path / "train.tsv", 'sentence\tlabel\n" good " film\t1\nit \'s "bad\t0\n')
    data = data_module(tmp_path, tiny_bert)
    table = data._table("train")
    assert [row["sentence"] for row in table.rows] == ['" good " film', "it 's \"bad"]


# Tokenising, padding and grouping.


def test_batches_are_padded_to_their_longest_text():
    collate = PadToLongest(pad_token_id=0)
    batch = collate([{"input_ids": [2, 7, 3], "labels": 1}, {"input_ids": [2, 3], "labels": 0}])
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_truncation_is_counted_once_per_split(tmp_path, tiny_bert, caplog):
    long_text = " ".join(WORDS)
    write(tmp_path / "train.tsv", f"sentence\tlabel\n{long_text}\t1\ngood\t0\n{long_text}\t0\n")
    write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    data = data_module(tmp_path, tiny_bert, max_length=8)
    with caplog.at_level(logging.INFO):
        data.setup("fit")
    assert max(data.datasets["train"].lengths) == 8
    assert "3 texts, " in caplog.text and "2 truncated to max_length 8" in caplog.text
    assert "0 truncated" in caplog.text  # dev


def padding_fraction(loader) -> float:
    masks = [batch["attention_mask"] for batch in loader]
    return 1 - sum(mask.sum().item() for mask in masks) / sum(mask.numel() for mask in masks)


def test_length_grouping_cuts_padding(tmp_path, tiny_bert):
    generator = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[: 1 + int(torch.randint(20, (1,), generator=generator))]) for _ in range(400)]
    write(
        tmp_path / "train.tsv",
        "sentence\tlabel\n" + "".join(f"{text}\t{i % 2}\n" for i, text in enumerate(lines)),
    )
    write(
        tmp_path / "dev.tsv",
        "sentence\tlabel\n" + "".join(f"{text}\t{i % 2}\n" for i, text in enumerate(lines)),
    )
    plain = data_module(tmp_path, tiny_bert, batch_size=16)
    grouped = data_module(tmp_path, tiny_bert, batch_size=16, group_by_length=True)
    for data in (plain, grouped):
        data.setup("fit")
    assert padding_fraction(plain.train_dataloader()) > 0.3
    assert padding_fraction(grouped.train_dataloader()) < 0.1
    assert padding_fraction(grouped.val_dataloader()) < padding_fraction(plain.val_dataloader())
    # Every text still appears exactly once per epoch.
    seen = sorted(row for batch in grouped.train_dataloader() for row in batch["labels"].tolist())
    assert len(seen) == 400


def test_length_grouped_sampler_is_random_per_epoch_and_reproducible():
    lengths = [int(n) for n in torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(1))]
    sampler = LengthGroupedSampler(lengths, batch_size=32, seed=7)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch0) == list(range(1000)) and sorted(epoch1) == list(range(1000))
    assert epoch0 != epoch1
    again = LengthGroupedSampler(lengths, batch_size=32, seed=7)
    assert list(again) == epoch0
    batches = [epoch0[i : i + 32] for i in range(0, 1000, 32)]
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spreads) / len(spreads) < 5  # random batches of 32 would spread over ~50 tokens


def test_length_grouped_sampler_deals_each_process_its_slice_of_every_batch():
    lengths = [int(n) for n in torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(1))]
    ranks = [LengthGroupedSampler(lengths, batch_size=16, seed=7, rank=r, world_size=2) for r in (0, 1)]
    streams = [list(sampler) for sampler in ranks]
    # 31 whole global batches of 32; the last 8 texts wait for the next epoch, so both take 31 steps
    assert [len(stream) for stream in streams] == [len(sampler) for sampler in ranks] == [496, 496]
    assert not set(streams[0]) & set(streams[1])
    one_process = list(LengthGroupedSampler(lengths, batch_size=32, seed=7))
    for step in range(31):  # step k of both processes is global batch k of one process with batch 32
        together = streams[0][step * 16 : (step + 1) * 16] + streams[1][step * 16 : (step + 1) * 16]
        assert together == one_process[step * 32 : (step + 1) * 32]
    resumed = LengthGroupedSampler(
        lengths, batch_size=16, seed=7, rank=1, world_size=2, start_batch=lambda: 5
    )
    assert list(resumed) == streams[1][5 * 16 :]


# Prediction input and output.


def test_predict_batches_carry_input_positions_ids_and_texts(sst_like_dir, tiny_bert):
    data = data_module(sst_like_dir, tiny_bert, eval_batch_size=5, group_by_length=True)
    data.setup("predict")
    batches = list(data.predict_dataloader())
    rows = sorted(
        (row, row_id, text)
        for batch in batches
        for row, row_id, text in zip(batch["row"], batch["id"], batch["text"], strict=True)
    )
    assert [row for row, _, _ in rows] == list(range(13))
    assert [row_id for _, row_id, _ in rows] == [str(i) for i in range(13)]
    assert rows[0][2] == "awful actors"
    assert "labels" not in batches[0]
    # Length order cuts padding; the input order comes back from `row` when predictions are written.
    assert [batch["row"] for batch in batches] != sorted(batch["row"] for batch in batches)


def test_predict_ids_fall_back_to_row_numbers_and_explicit_id_column_must_exist(tmp_path, tiny_bert):
    write(tmp_path / "test.tsv", "sentence\nfun\ndull\n")
    data = data_module(tmp_path, tiny_bert, labels=["0", "1"])
    data.setup("predict")
    assert data.datasets["predict"].row_ids == ["0", "1"]
    data = data_module(tmp_path, tiny_bert, labels=["0", "1"], id_column="guid")
    with pytest.raises(UserError, match="has no column 'guid'.*--data.id_column"):
        data.setup("predict")


def test_prediction_writer_csv_and_jsonl(tmp_path):
    rows = [{"id": "0", "text": 'say "hi", then\ttab', "label": "1", "probability": 0.75}]
    write_rows(tmp_path / "out" / "p.csv", rows)
    write_rows(tmp_path / "out" / "p.jsonl", rows)
    assert (tmp_path / "out" / "p.csv").read_text().splitlines()[0] == "id,text,label,probability"
    assert [json.loads(line) for line in (tmp_path / "out" / "p.jsonl").read_text().splitlines()] == rows
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["p.csv", "p.jsonl"]  # no temp files
    with pytest.raises(UserError, match=r"must end in \.csv or \.jsonl"):
        PredictionWriter("predictions.txt")


def test_prediction_writer_restores_input_order_from_row(tmp_path):
    writer = PredictionWriter(str(tmp_path / "p.jsonl"))
    batches = [
        {"row": [2, 0], "id": ["c", "a"], "label": ["x", "y"]},
        {"row": [1], "id": ["b"], "label": ["z"]},
    ]
    writer.write_on_epoch_end(None, None, batches, [])
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert lines == [{"id": "a", "label": "y"}, {"id": "b", "label": "z"}, {"id": "c", "label": "x"}]


# Hub datasets.


def test_hub_dataset_without_datasets_package_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(UserError, match=r"needs the 'datasets' package; install it with: pip install"):
        _ = TextClassificationDataModule(train="hub:glue:sst2:train").num_labels


def test_hub_dataset_splits_are_read_like_files(monkeypatch, tiny_bert):
    class FakeSplit(list):
        column_names = ["sentence", "label", "idx"]

    splits = {
        "train": FakeSplit(
            [{"sentence": "good", "label": 1, "idx": 0}, {"sentence": "bad", "label": 0, "idx": 1}]
        ),
        "validation": FakeSplit([{"sentence": "fun", "label": 1, "idx": 0}]),
        "test": FakeSplit([{"sentence": "dull", "label": -1, "idx": 7}]),
    }
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return splits[split]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    hub = "hub:glue:sst2:"
    data = data_module(
        Path("."), tiny_bert, train=hub + "train", val=hub + "validation", predict=hub + "test"
    )
    assert data.label_names == ["0", "1"]
    data.setup("fit")
    data.setup("predict")
    assert data.datasets["predict"].row_ids == ["7"]
    assert calls == [("glue", "sst2", "train"), ("glue", "sst2", "validation"), ("glue", "sst2", "test")]


# The real SST-2 files, when the shared folder is there.


def test_shared_sst2_files(shared_sst2, tiny_bert):
    data = data_module(shared_sst2, tiny_bert, labels=["0", "1"])
    assert (len(data._table("val")), len(data._table("predict"))) == (872, 1821)
    data.setup("predict")
    assert data.datasets["predict"].row_ids[:3] == ["0", "1", "2"]
    assert TextClassificationDataModule(data_dir=str(shared_sst2)).label_names == ["0", "1"]


@pytest.mark.parametrize("source", ["hub:glue", "hub:", "hub:glue::train", "hub:a:b:c:d"])
def test_malformed_hub_source_shows_the_form(source):
    with pytest.raises(UserError, match=r"must be hub:<dataset>:<split> or hub:<dataset>:<config>:<split>"):
        _ = TextClassificationDataModule(train=source).num_labels
