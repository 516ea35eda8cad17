"""Tiny GPTs pretrained by `lightning-llm fit` (one per tokenizer kind), for the GPT-classifier tests.

Import the fixture explicitly (`from gpt_fixtures import gpt_checkpoints`) so that pytest registers it in the
importing test module; it is built once per session.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from lm_helpers import tiny_lm_overrides, write_tiny_corpus

from lightning_llm.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "gpt-shakespeare-char.yaml"


@pytest.fixture(scope="session")
def gpt_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A two-step `fit` checkpoint of a 2-block GPT (block size 16) per tokenizer kind: `char` and `bpe`."""
    folder = tmp_path_factory.mktemp("pretrained_gpt")
    corpus = write_tiny_corpus(folder / "corpus.txt")
    made = {}
    with contextlib.chdir(folder):
        for kind in ("char", "bpe"):
            args = ["fit", "--config", str(CONFIG), *tiny_lm_overrides(corpus), "--trainer.max_steps", "2"]
            args += ["--model.init_args.model.init_args.n_layer", "2", "--data.tokenizer", kind]
            args += ["--data.bpe_vocab_size", "300"] if kind == "bpe" else []
            args += ["--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.version", kind]
            main(args)
            made[kind] = folder / "logs" / "gpt-shakespeare-char" / kind / "checkpoints" / "last.ckpt"
    return made
