"""Wrong, truncated and corrupt checkpoints, and a loss that blows up, each end with one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_helpers import tiny_lm_overrides

from lightning_llm.callbacks.finite_loss import StopOnNonFiniteLoss
from lightning_llm.cli import main
from lightning_llm.errors import UserError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "gpt-shakespeare-char.yaml"
LAST = Path("logs/gpt-shakespeare-char/version_0/checkpoints/last.ckpt")


@pytest.fixture
def trained(tiny_corpus) -> Path:
    main(["fit", "--config", str(CONFIG), *tiny_lm_overrides(tiny_corpus), "--trainer.max_steps", "2"])
    assert LAST.is_file()
    return LAST


def error_of(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_truncated_checkpoint(trained, tmp_path, capsys):
    broken = tmp_path / "truncated.ckpt"
    broken.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    assert "is truncated or corrupt" in error_of(["generate", "--ckpt_path", str(broken)], capsys)


def test_checkpoint_with_a_corrupt_byte(trained, tmp_path, capsys):
    data = bytearray(trained.read_bytes())
    data[0] ^= 0xFF  # the zip signature
    broken = tmp_path / "corrupt.ckpt"
    broken.write_bytes(bytes(data))
    assert "is truncated or corrupt" in error_of(["generate", "--ckpt_path", str(broken)], capsys)


def test_checkpoint_of_another_model_shape_names_the_parameter(trained, tiny_corpus, tmp_path, capsys):
    # the CLI takes the model's hyperparameters from the checkpoint, but the vocabulary comes from the data:
    # resuming on a corpus with other characters must fail with the parameter and both shapes
    other = tmp_path / "other.txt"
    other.write_text(tiny_corpus.read_text() + "ÄÖÜ ß €\n" * 50, encoding="utf-8")
    args = ["fit", "--config", str(CONFIG), *tiny_lm_overrides(other), "--trainer.max_steps", "4"]
    err = error_of([*args, "--ckpt_path", str(trained)], capsys)
    vocab = torch.load(trained, weights_only=True)["state_dict"]["model.transformer.wte.weight"].shape[0]
    assert "does not fit this model" in err
    assert (
        f"model.transformer.wte.weight has shape ({vocab}, 16) in the checkpoint but ({vocab + 5}, 16)" in err
    )


def test_checkpoint_of_another_model_class_is_refused(trained, capsys):
    from lightning_llm.checkpoints import load_module
    from lightning_llm.lit.classifier import SequenceClassifier

    with pytest.raises(UserError, match="not a SequenceClassifier"):
        load_module(SequenceClassifier, trained)


def test_missing_checkpoint_for_fit(tiny_corpus, capsys):
    args = ["fit", "--config", str(CONFIG), *tiny_lm_overrides(tiny_corpus), "--ckpt_path", "nowhere.ckpt"]
    assert "checkpoint nowhere.ckpt does not exist" in error_of(args, capsys)


def test_non_finite_loss_stops_with_the_step():
    class FakeTrainer:
        global_step = 42
        checkpoint_callbacks = []

    with pytest.raises(UserError, match="loss became nan at step 42.*this run wrote no checkpoint"):
        StopOnNonFiniteLoss().on_train_batch_end(
            FakeTrainer(), None, {"loss": torch.tensor(float("nan"))}, None, 0
        )
    StopOnNonFiniteLoss().on_train_batch_end(FakeTrainer(), None, {"loss": torch.tensor(1.0)}, None, 0)


def test_exploding_training_keeps_the_last_good_checkpoint(trained, tiny_corpus, capsys):
    before = trained.read_bytes()
    args = ["fit", "--config", str(CONFIG), *tiny_lm_overrides(tiny_corpus), "--trainer.max_steps", "30"]
    args += ["--model.init_args.learning_rate", "1e30", "--trainer.gradient_clip_val", "null"]
    args += ["--trainer.val_check_interval", "2"]
    # a new run may not write into the folder of the trained one: it would mix checkpoints and config.yaml
    err = error_of([*args, "--trainer.logger.init_args.version", "version_0"], capsys)
    assert "holds another run's checkpoints" in err
    err = error_of([*args, "--trainer.logger.init_args.version", "exploding"], capsys)
    assert "loss became" in err and "at step" in err
    assert trained.read_bytes() == before
