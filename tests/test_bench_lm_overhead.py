"""bench/lm_overhead.py puts every Trainer block between two plain-loop blocks of the same length (a smoke
test: its figures are measured by `make bench`, never here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lm_helpers import tiny_lm_overrides

from lightning_llm.data.language_modeling import LanguageModelingDataModule
from lightning_llm.models import GPT

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def lm_overhead(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import lm_overhead

    yield lm_overhead
    sys.modules.pop("lm_overhead", None)


def test_each_trainer_block_sits_between_plain_blocks_of_as_many_steps(lm_overhead, tiny_corpus):
    overrides = [*tiny_lm_overrides(tiny_corpus), "--trainer.enable_progress_bar", "false"]
    result = lm_overhead.measure(str(tiny_corpus), blocks=3, block_steps=2, warmup=1, overrides=overrides)
    assert result["blocks"] == 3 and len(result["per_block"]) == 3
    assert result["trainer_steps"] == 1 + 3 * 2  # warm-up, then 3 blocks
    assert result["plain_steps"] == 1 + 4 * 2  # warm-up, then a block before, between and after them
    assert result["median"] == sorted(result["per_block"])[1]


def test_a_fit_that_stops_early_is_reported_not_paired(lm_overhead, tiny_corpus):
    overrides = [*tiny_lm_overrides(tiny_corpus), "--trainer.enable_progress_bar", "false"]
    with pytest.raises(RuntimeError, match="fit stopped after 4 of 7 steps"):
        lm_overhead.measure(
            str(tiny_corpus),
            blocks=3,
            block_steps=2,
            warmup=1,
            overrides=[*overrides, "--trainer.max_steps", "4"],
        )


def test_blocks_of_no_steps_are_refused(lm_overhead, tiny_corpus):
    with pytest.raises(ValueError, match="at least 1"):
        lm_overhead.measure(str(tiny_corpus), blocks=3, block_steps=2, warmup=0)


def test_the_plain_loop_trains_its_model_past_the_end_of_an_epoch(lm_overhead, tiny_corpus):
    dm = LanguageModelingDataModule(path=str(tiny_corpus), block_size=16, batch_size=4, val_windows=2)
    dm.setup("fit")
    epoch = sum(1 for _ in dm.train_dataloader())
    model = GPT(dm.vocab_size, 16, 1, 2, 16)
    before = [p.detach().clone() for p in model.parameters()]

    class Hparams:
        learning_rate, min_lr, warmup_steps, weight_decay, betas, eps = 1e-2, 1e-3, 2, 0.1, (0.9, 0.99), 1e-8

    loop = lm_overhead.PlainLoop(model, Hparams, decay_steps=10, make_batches=dm.train_dataloader)
    assert loop.run(epoch + 2, clip=1.0) > 0
    assert loop.step == epoch + 2
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
