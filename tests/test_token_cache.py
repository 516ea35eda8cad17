import numpy as np
import pytest

from lightning_llm.data.corpus import FileCorpus, resolve_files, stdlib_sources
from lightning_llm.data.token_cache import build_or_load
from lightning_llm.errors import UserError


def test_cache_is_reused_and_invalidated_by_content_and_settings(tiny_corpus, tmp_path):
    cache_dir = tmp_path / "cache"
    first = build_or_load(FileCorpus([tiny_corpus]), cache_dir, "char", 0)
    assert first.tokenizer.decode(first.tokens[:50].tolist()) == tiny_corpus.read_text()[:50]
    mtime = (first.directory / "tokens.bin").stat().st_mtime_ns
    again = build_or_load(FileCorpus([tiny_corpus]), cache_dir, "char", 0)
    assert again.directory == first.directory
    assert (again.directory / "tokens.bin").stat().st_mtime_ns == mtime  # reused, not rewritten

    bpe = build_or_load(FileCorpus([tiny_corpus]), cache_dir, "bpe", 300)
    assert bpe.directory != first.directory
    assert len(bpe.tokens) < len(first.tokens)

    tiny_corpus.write_text(tiny_corpus.read_text() + "a new line\n")
    changed = build_or_load(FileCorpus([tiny_corpus]), cache_dir, "char", 0)
    assert changed.directory != first.directory


def test_uint16_tokens_and_no_temp_files_left(tiny_corpus, tmp_path):
    cache = build_or_load(FileCorpus([tiny_corpus]), tmp_path / "cache", "char", 0)
    assert cache.tokens.dtype == np.uint16
    assert not list(cache.directory.glob(".tmp-*"))


def test_incomplete_entry_is_rebuilt(tiny_corpus, tmp_path):
    cache = build_or_load(FileCorpus([tiny_corpus]), tmp_path / "cache", "char", 0)
    n = len(cache.tokens)
    (cache.directory / "tokens.bin").write_bytes(b"\0\0")  # as if a run died mid-write without temp files
    (cache.directory / ".tmp-stale").write_bytes(b"garbage")
    rebuilt = build_or_load(FileCorpus([tiny_corpus]), tmp_path / "cache", "char", 0)
    assert len(rebuilt.tokens) == n
    assert not (cache.directory / ".tmp-stale").exists()


def test_non_utf8_bytes_are_replaced_and_reported(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text\n\xff\xfe more text\n" * 10)
    corpus = FileCorpus([path])
    with pytest.warns(UserWarning, match="20 byte"):
        text = "".join(corpus.texts())
    assert "\ufffd" in text


def test_files_globs_and_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.txt").write_text("1")
    (tmp_path / "a" / "two.md").write_text("2")
    (tmp_path / "a" / "skip.bin").write_bytes(b"\0")
    assert [f.name for f in resolve_files(str(tmp_path / "a"))] == ["one.txt", "two.md"]
    assert [f.name for f in resolve_files(str(tmp_path / "a" / "*.txt"))] == ["one.txt"]
    assert len(resolve_files([str(tmp_path / "a" / "one.txt"), str(tmp_path / "a" / "two.md")])) == 2


def test_stdlib_corpus_is_real_sorted_python():
    files = stdlib_sources()
    assert files == sorted(files)
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts for f in files)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "missing.txt"), "does not exist"),
        (lambda p: str(p / "nothing-*.txt"), "matches no files"),
        (lambda p: str(p / "emptydir"), "holds no text files"),
    ],
)
def test_bad_paths_name_the_problem(tmp_path, make, message):
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(UserError, match=message):
        resolve_files(make(tmp_path))


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="empty"):
        build_or_load(FileCorpus([empty]), tmp_path / "cache", "char", 0)


def test_bpe_trains_on_an_even_sample_of_a_big_corpus(tmp_path, monkeypatch):
    from lightning_llm.data import token_cache

    files = []
    for index in range(10):
        files.append(tmp_path / f"part{index}.txt")
        files[-1].write_text(f"file {index} says hello\n" * 400)
    corpus = FileCorpus(files, chunk_chars=1000)
    total = sum(len(text) for text in corpus.texts())
    monkeypatch.setattr(token_cache, "BPE_TRAIN_CHARS", total // 4)
    sample = "".join(token_cache.training_texts(corpus, "bpe"))
    assert total // 5 < len(sample) < total // 3
    assert all(f"file {index} says" in sample for index in range(10))  # spread over the whole corpus
    assert sum(len(text) for text in token_cache.training_texts(corpus, "char")) == total  # every character


def test_two_runs_building_the_same_cache_at_once_both_succeed(tmp_path):
    """The second run waits for the first one's entry instead of deleting its temp files as stale."""
    import subprocess
    import sys
    import time

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    lines = (" ".join(words[(i * 7 + j) % 10] + str(i % 97) for j in range(12)) for i in range(60_000))
    (tmp_path / "corpus.txt").write_text("\n".join(lines))
    build = (
        "from pathlib import Path; from lightning_llm.data.corpus import FileCorpus; from lightning_llm.data.token_cache import build_or_load;"
        "c = build_or_load(FileCorpus([Path('corpus.txt')]), 'cache', 'bpe', 400); print(len(c.tokens), c.directory)"
    )

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", build],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start()
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache").glob("*/.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the second run starts while the first one is writing its entry
    runs = [first, start()]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in results]
    assert results[0][0] == results[1][0]  # the same entry, the same token count
    assert "waiting for another run to finish building" in results[1][1]  # it overlapped the first build
    entry = tmp_path / results[0][0].split()[1]
    assert sorted(p.name for p in entry.iterdir()) == [".lock", "meta.json", "tokenizer.json", "tokens.bin"]
