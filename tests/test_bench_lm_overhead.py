"""bench/lm_overhead.py pairs every plain-loop block with a Trainer block of the same length (a smoke test:
its figures are measured by `make bench`, never here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from lm_helpers import tiny_lm_overrides

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def lm_overhead(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import lm_overhead

    yield lm_overhead
    sys.modules.pop("lm_overhead", None)


def test_interleaved_blocks_pair_up_and_both_paths_train(lm_overhead, tiny_corpus):
    overrides = [*tiny_lm_overrides(tiny_corpus), "--trainer.enable_progress_bar", "false"]
    result = lm_overhead.measure(str(tiny_corpus), blocks=3, block_steps=2, warmup=1, overrides=overrides)
    assert result["blocks"] == 3 and len(result["per_block"]) == 3
    assert all(ratio > 0 for ratio in result["per_block"])
    assert result["median"] == sorted(result["per_block"])[1]
    assert result["plain_ms_per_step"] > 0 and result["trainer_ms_per_step"] > 0


def test_the_plain_loop_steps_change_its_own_model_only(lm_overhead, tiny_corpus):
    import torch

    from lightning_llm.data.language_modeling import LanguageModelingDataModule
    from lightning_llm.models import GPT

    dm = LanguageModelingDataModule(path=str(tiny_corpus), block_size=16, batch_size=4, val_windows=2)
    dm.setup("fit")
    model = GPT(dm.vocab_size, 16, 1, 2, 16)
    before = [p.detach().clone() for p in model.parameters()]

    class Hparams:
        learning_rate, min_lr, warmup_steps, weight_decay, betas, eps = 1e-2, 1e-3, 2, 0.1, (0.9, 0.99), 1e-8

    loop = lm_overhead.PlainLoop(model, Hparams, decay_steps=10, batches=iter(dm.train_dataloader()))
    assert loop.run(3, clip=1.0) > 0
    assert loop.step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
