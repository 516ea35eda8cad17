"""Text in other encodings: BOMs are honoured, binary files refused, and labels compared without padding."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from bert_fixtures import tiny_bert  # noqa: F401

from lightning_llm.data.classification import TextClassificationDataModule
from lightning_llm.data.corpus import FileCorpus
from lightning_llm.data.labelled_text import read_table
from lightning_llm.data.text_encoding import detect_encoding
from lightning_llm.errors import UserError
from lightning_llm.models.hf_encoder import HFTextEncoder

TEXT = "Ünïcödé line one — naïve café\nsecond line: 東京, emoji 🙂\n" * 50


def corpus_text(path: Path, chunk_chars: int = 64) -> str:
    return "".join(FileCorpus([path], chunk_chars=chunk_chars).texts())


@pytest.mark.parametrize(
    ("bom", "codec"),
    [
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF8, "utf-8"),
    ],
)
def test_a_corpus_with_a_bom_decodes_to_the_same_text_as_utf8(tmp_path, bom, codec):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(TEXT.encode("utf-8"))
    marked = tmp_path / "marked.txt"
    marked.write_bytes(bom + TEXT.encode(codec))
    text = corpus_text(marked)
    assert text == corpus_text(plain) == TEXT + "\n"  # the BOM is stripped, not read as U+FEFF
    assert "\0" not in text and "\ufeff" not in text


@pytest.mark.parametrize(
    "content",
    [TEXT.encode("utf-16-le"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256))],
    ids=["utf16-without-bom", "binary"],
)
def test_nul_bytes_without_a_bom_are_refused_naming_the_file_and_the_fix(tmp_path, content):
    path = tmp_path / "suspect.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"suspect\.txt holds NUL bytes.*convert it to UTF-8.*data\.path"):
        corpus_text(path)


def test_a_nul_past_the_sniffed_start_is_refused_too(tmp_path):
    path = tmp_path / "late.txt"
    path.write_bytes(b"plain text\n" * 5000 + b"\0\0binary tail\n")
    with pytest.raises(UserError, match=r"late\.txt holds NUL bytes"):
        corpus_text(path, chunk_chars=1 << 12)


def test_detect_encoding_names_the_codec(tmp_path):
    path = tmp_path / "a.txt"
    for content, expected in [
        (b"plain", "utf-8"),
        (b"", "utf-8"),
        (codecs.BOM_UTF8 + b"x", "utf-8-sig"),
        (codecs.BOM_UTF16_LE + "x".encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF32_LE + "x".encode("utf-32-le"), "utf-32"),
    ]:
        path.write_bytes(content)
        assert detect_encoding(path, fix="-") == expected


def test_a_csv_whose_header_starts_with_a_bom_finds_its_first_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(codecs.BOM_UTF8 + "sentence,label\ngood film,1\ncafé,0\n".encode())
    table = read_table(path)
    assert table.columns == ["sentence", "label"]
    assert table.values("sentence", "text_column") == ["good film", "café"]


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_utf16_tables_with_a_bom_read_like_utf8(tmp_path, suffix):
    rows = (
        "sentence\tlabel\nnaïve\t1\nbad\t0\n" if suffix == ".tsv" else '{"sentence": "naïve", "label": 1}\n'
    )
    plain, wide = tmp_path / f"plain{suffix}", tmp_path / f"wide{suffix}"
    plain.write_text(rows, encoding="utf-8")
    wide.write_text(rows, encoding="utf-16")  # Python writes the BOM
    assert read_table(wide).rows == read_table(plain).rows


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (".tsv", "sentence\tlabel\ngood\t1\ncafé\t0\n".encode("latin-1"), r"line 3 is not valid UTF-8"),
        (".jsonl", '{"a": 1}\n{"a": "é"}\n'.encode("cp1252"), r"line 2 is not valid UTF-8"),
        (".csv", "sentence,label\ngood,1\n".encode("utf-16-le"), r"holds NUL bytes and no byte-order mark"),
    ],
)
def test_tables_in_other_encodings_name_the_file_and_the_fix(tmp_path, suffix, content, message):
    path = tmp_path / f"train{suffix}"
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"train\{suffix}.*{message}.*re-save it as UTF-8"):
        read_table(path)


def data_module(folder: Path, tokenizer: Path, **kwargs) -> TextClassificationDataModule:
    data = TextClassificationDataModule(data_dir=str(folder), **kwargs)
    data.tokenizer = HFTextEncoder(str(tokenizer))
    return data


def test_labels_that_differ_only_by_surrounding_whitespace_are_one_class(tmp_path, tiny_bert):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\tpositive\nfun\t positive \nbad\tnegative\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngreat\tpositive \ndull\tnegative\n")
    data = data_module(tmp_path, tiny_bert)
    assert data.label_names == ["negative", "positive"]
    data.setup("fit")
    assert list(data.datasets["train"].labels) == [1, 1, 0]
    assert list(data.datasets["val"].labels) == [1, 0]


def test_numeric_labels_with_trailing_spaces_match_declared_labels(tmp_path, tiny_bert):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1 \nbad\t0\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\t 1\n")
    data = data_module(tmp_path, tiny_bert, labels=["0", "1"])
    data.setup("fit")
    assert list(data.datasets["train"].labels) == [1, 0]


@pytest.mark.parametrize("labels", [None, ["0", "1"]], ids=["found", "declared"])
def test_an_empty_label_names_its_line(tmp_path, tiny_bert, labels):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\nodd\t  \n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    data = data_module(tmp_path, tiny_bert, labels=labels)
    with pytest.raises(UserError, match=r"train\.tsv line 4: the label in column 'label' is empty"):
        _ = data.num_labels
        data.setup("fit")
