import math

import lightning.pytorch as pl
import pytest
import torch

from lightning_llm.callbacks.text_samples import TextSamples
from lightning_llm.data.language_modeling import LanguageModelingDataModule
from lightning_llm.lit.language_model import LanguageModel
from lightning_llm.lit.schedules import warmup_cosine
from lightning_llm.models import GPT


def test_warmup_cosine_schedule():
    values = [warmup_cosine(s, warmup_steps=10, decay_steps=110, min_ratio=0.1) for s in range(130)]
    assert values[0] == pytest.approx(1 / 11)
    assert values[9] == pytest.approx(10 / 11)
    assert values[10] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.55)  # half way down the cosine
    assert values[110] == values[129] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


def test_weight_decay_only_on_matrices_and_fused_adamw():
    module = LanguageModel(GPT(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8), decay_steps=100)
    optimizer = module.configure_optimizers()["optimizer"]
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(module.parameters()))
    assert optimizer.defaults["fused"]


def test_training_lowers_the_loss_and_the_checkpoint_generates_alone(tiny_corpus, tmp_path):
    pl.seed_everything(0)
    dm = LanguageModelingDataModule(
        path=str(tiny_corpus), block_size=32, batch_size=8, cache_dir="cache", val_windows=16
    )
    model = GPT(vocab_size=dm.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)
    module = LanguageModel(model, learning_rate=3e-3, warmup_steps=5)
    trainer = pl.Trainer(
        max_steps=80,
        val_check_interval=40,
        check_val_every_n_epoch=None,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[TextSamples(max_new_tokens=5)],
    )
    first = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    assert first == pytest.approx(math.log(dm.vocab_size), abs=0.3)
    trainer.fit(module, datamodule=dm)
    last = trainer.callback_metrics["val/loss"].item()
    assert last < first - 1.0
    assert trainer.callback_metrics["val/ppl"].item() == pytest.approx(math.exp(last), rel=1e-4)

    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    restored = LanguageModel.load_from_checkpoint(
        ckpt, model=GPT(dm.vocab_size, 32, 2, 2, 32), weights_only=True
    )
    text = restored.generate_text("the ", max_new_tokens=20, temperature=0, seed=0)
    assert text.startswith("the ") and len(text) == 24
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], tensor)


@pytest.mark.parametrize(("limits", "expected"), [({"max_steps": 7}, [3, 6, 7]), ({"max_epochs": 2}, None)])
def test_training_loss_is_logged_on_logging_steps_and_the_last_one(tiny_corpus, tmp_path, limits, expected):
    """`self.log` costs milliseconds: the loss goes to the loggers' steps (every 3 here) and the run's last."""
    dm = LanguageModelingDataModule(path=str(tiny_corpus), block_size=16, batch_size=8, cache_dir="cache")
    module = LanguageModel(GPT(vocab_size=dm.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    logged_at: list[int] = []
    log = module.log

    def spy(name, value, *args, **kwargs):
        if name == "train/loss":
            logged_at.append(module.trainer.global_step + 1)  # the optimizer step this batch makes
        return log(name, value, *args, **kwargs)

    module.log = spy
    trainer = pl.Trainer(
        **limits,
        log_every_n_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    total = trainer.global_step
    assert logged_at == (expected or sorted({*range(3, total + 1, 3), total}))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
