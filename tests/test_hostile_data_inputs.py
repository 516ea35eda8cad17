"""Text in the wrong encoding and careless labels, through the real command line: each ends in one `error:`
line naming the file and the fix, exit status 2, no traceback and no file changed; a BOM-marked corpus trains.
"""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from bert_fixtures import classifier_overrides, tiny_bert, write_sst_like  # noqa: F401
from cli_runner import changed_files, error_line, run_cli, snapshot
from lm_helpers import SHAKESPEARE_CONFIG, tiny_lm_overrides, write_tiny_corpus

# Each run would take seconds if the bad input got through: the tiny model, one step, no sampling.
FAST = ["--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"]


def lm_fit(corpus: Path) -> list[str]:
    return ["fit", "--config", str(SHAKESPEARE_CONFIG), *tiny_lm_overrides(corpus), *FAST]


def classifier_fit(folder: Path, tiny_bert: Path) -> list[str]:
    return ["fit", *classifier_overrides(folder, tiny_bert), *FAST]


def reencode(path: Path, encoding: str) -> Path:
    """Rewrite a UTF-8 file in `encoding` (Python's `utf-16` writes a BOM, `utf-16-le` does not)."""
    path.write_bytes(path.read_text(encoding="utf-8").encode(encoding))
    return path


def utf16_corpus_without_bom(tmp: Path, tiny_bert: Path) -> list[str]:
    return lm_fit(reencode(write_tiny_corpus(tmp / "corpus.txt"), "utf-16-le"))


def binary_file_in_corpus_folder(tmp: Path, tiny_bert: Path) -> list[str]:
    (tmp / "texts").mkdir()
    write_tiny_corpus(tmp / "texts" / "part1.txt")
    (tmp / "texts" / "vectors.json").write_bytes(b"\x93NUMPY\x01\x00v\x00" + bytes(range(256)))
    return lm_fit(tmp / "texts")


def latin1_train_tsv(tmp: Path, tiny_bert: Path) -> list[str]:
    folder = write_sst_like(tmp / "sst")
    with (folder / "train.tsv").open("a", encoding="latin-1") as file:
        file.write("un film très charmant\t1\n")
    return classifier_fit(folder, tiny_bert)


def utf16_dev_tsv_without_bom(tmp: Path, tiny_bert: Path) -> list[str]:
    folder = write_sst_like(tmp / "sst")
    reencode(folder / "dev.tsv", "utf-16-le")
    return classifier_fit(folder, tiny_bert)


def empty_label(tmp: Path, tiny_bert: Path) -> list[str]:
    folder = write_sst_like(tmp / "sst")
    with (folder / "train.tsv").open("a", encoding="utf-8") as file:
        file.write("a good film\t \n")
    return classifier_fit(folder, tiny_bert)


@dataclass(frozen=True)
class HostileInput:
    name: str
    build: Callable[[Path, Path], list[str]]  # writes the files under a folder, returns the CLI arguments
    names: str  # the file (and line) the error line must name
    fix: str  # what the error line must tell the user to do


TRAIN_LINE = "train.tsv line 74"  # write_sst_like's 72 training rows after the header, then the bad one

CASES = [
    HostileInput("utf16-corpus-without-bom", utf16_corpus_without_bom, "corpus.txt", "convert it to UTF-8"),
    HostileInput(
        "binary-file-in-corpus-folder",
        binary_file_in_corpus_folder,
        "vectors.json",
        "remove it from data.path",
    ),
    HostileInput("latin1-train-tsv", latin1_train_tsv, TRAIN_LINE, "re-save it as UTF-8"),
    HostileInput("utf16-dev-tsv-without-bom", utf16_dev_tsv_without_bom, "dev.tsv", "re-save it as UTF-8"),
    HostileInput("empty-label", empty_label, TRAIN_LINE, "write the row's class or remove the row"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_input_ends_in_one_error_line_naming_the_file_and_the_fix(tmp_path, tiny_bert, case):
    (tmp_path / "inputs").mkdir()
    args = case.build(tmp_path / "inputs", tiny_bert)
    before = snapshot(tmp_path)
    line = error_line(run_cli(args, cwd=tmp_path))
    assert case.names in line and case.fix in line, line
    assert changed_files(before, tmp_path) == []


def test_a_utf16_corpus_with_a_bom_trains_on_the_decoded_text(tmp_path):
    text = write_tiny_corpus(tmp_path / "corpus.txt").read_text(encoding="utf-8")
    corpus = reencode(tmp_path / "corpus.txt", "utf-16")
    result = run_cli(lm_fit(corpus), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "logs").rglob("last.ckpt"))
    [tokenizer] = (tmp_path / "cache").glob("*/tokenizer.json")
    assert set(json.loads(tokenizer.read_text())["chars"]) == set(text)  # no NUL, BOM or U+FFFD learnt
