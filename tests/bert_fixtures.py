"""A tiny random BERT with a real WordPiece tokenizer saved to disk, and small labelled text files.

Import the fixtures explicitly (`from bert_fixtures import tiny_bert, sst_like_dir`) so that pytest
registers them in the importing test module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

MINILM_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "minilm-sst2.yaml"

WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "is",
    "was",
    "good",
    "bad",
    "great",
    "awful",
    "fun",
    "boring",
    "not",
    "very",
    "and",
    "but",
    "it",
    "this",
    "that",
    "story",
    "actors",
    "plot",
    "funny",
    "sad",
    "long",
    "short",
    "best",
    "worst",
    "love",
    "hate",
    "smart",
    "dull",
    "charming",
    "mess",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

POSITIVE = [
    "a good film",
    "the best movie",
    "great fun",
    "very charming story",
    "i love this film",
    "smart and funny",
]
NEGATIVE = [
    "a bad film",
    "the worst movie",
    "boring and long",
    "a dull mess",
    "i hate this plot",
    "awful actors",
]
SHARED_SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def save_tiny_bert(folder: Path, layers: int = 2) -> Path:
    """Write a random 2-layer BERT (hidden 32) and its WordPiece tokenizer with `save_pretrained`."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokens = SPECIAL + WORDS + ["##s", "##ly", "i"]
    # transformers v5 ignores `vocab_file=` in the constructor (it only reads files in from_pretrained).
    tokenizer = BertTokenizerFast(
        vocab={token: index for index, token in enumerate(tokens)}, do_lower_case=True
    )
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_sst_like(folder: Path, train_repeats: int = 6) -> Path:
    """SST-2 shaped TSV files: train/dev with `sentence<TAB>label`, test with `index<TAB>sentence`."""
    folder.mkdir(parents=True, exist_ok=True)
    labelled = [(text, "1") for text in POSITIVE] + [(text, "0") for text in NEGATIVE]
    train = [labelled[(i * 5) % len(labelled)] for i in range(len(labelled) * train_repeats)]
    _write_tsv(folder / "train.tsv", ["sentence", "label"], train)
    _write_tsv(folder / "dev.tsv", ["sentence", "label"], labelled)
    tests = [
        (str(i), text) for i, (text, _) in enumerate(labelled[::-1] + [("it was " + " ".join(WORDS), "")])
    ]
    _write_tsv(folder / "test.tsv", ["index", "sentence"], tests)
    return folder


def _write_tsv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a tiny random BERT and its tokenizer, loadable with `from_pretrained`."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def sst_like_dir(tmp_path) -> Path:
    """Folder with SST-2 shaped train.tsv, dev.tsv and (unlabelled) test.tsv."""
    return write_sst_like(tmp_path / "sst")


@pytest.fixture
def shared_sst2() -> Path:
    """The real SST-2 folder beside the repository; the test is skipped where it is absent."""
    if not (SHARED_SST2 / "train.tsv").is_file():
        pytest.skip("../shared/data/sst2 is absent")
    return SHARED_SST2


def classifier_overrides(
    folder: Path, pretrained: Path, config: Path = MINILM_CONFIG, batch_size: int = 4
) -> list[str]:
    """Arguments that shrink a classifier config to a tiny pretrained network (an HF folder, or a GPT checkpoint
    for a GPT-backed config) and an SST-2-like folder, logging to ./logs."""
    source = "checkpoint" if "GPTClassifier" in config.read_text() else "pretrained"
    args = ["--config", str(config), f"--model.init_args.backbone.init_args.{source}", str(pretrained)]
    args += ["--data.data_dir", str(folder), "--data.batch_size", str(batch_size)]
    return [*args, "--trainer.logger.init_args.save_dir", "logs"]
