"""The GPT classifier (fully fine-tuned, and with LoRA; in one process and in two under DDP) killed with SIGKILL
resumes with the same losses."""

# Fixtures imported from the fixture modules come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from bert_fixtures import sst_like_dir  # noqa: F401
from gpt_fixtures import gpt_checkpoints  # noqa: F401
from lm_helpers import finish, start_processes, step_losses, wait_for_step
from test_resume import start_training

from lightning_llm.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "gpt-sst2-finetune.yaml"
EPOCHS = 3  # 72 rows in batches of 8: 9 steps an epoch, a checkpoint after each


def finetune_args(folder: Path, backbone: Path, version: str, *extra: str) -> list[str]:
    args = ["fit", "--config", str(CONFIG), "--data.data_dir", str(folder), "--data.batch_size", "8"]
    args += ["--model.init_args.backbone.init_args.checkpoint", str(backbone), "--data.max_length", "16"]
    args += ["--trainer.max_epochs", str(EPOCHS), "--trainer.log_every_n_steps", "1"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", "logs"]
    return [*args, "--trainer.logger.init_args.version", version, *extra]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--model.init_args.lora", "{r: 4, alpha: 8}"]], ids=["full", "lora"])
def test_sigkill_then_resume_matches_the_uninterrupted_run(sst_like_dir, gpt_checkpoints, extra, capsys):
    backbone = gpt_checkpoints["bpe"]
    main(finetune_args(sst_like_dir, backbone, "straight", *extra))
    straight = step_losses(Path("logs/gpt-sst2-finetune/straight"))
    run_dir = Path("logs/gpt-sst2-finetune/killed")
    process = start_training(finetune_args(sst_like_dir, backbone, "killed", *extra))
    wait_for_step(process, run_dir, 11)  # into the second epoch, after the first epoch's checkpoint
    process.kill()
    process.wait()
    capsys.readouterr()
    main([*finetune_args(sst_like_dir, backbone, "killed", *extra), "--ckpt_path", "last"])
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().err
    resumed = step_losses(run_dir)
    assert len(straight) == 9 * EPOCHS
    assert max(resumed) == max(straight)
    deltas = [abs(resumed[step] - straight[step]) for step in resumed if step >= 9]
    assert deltas and max(deltas) == 0.0


@pytest.mark.slow
def test_ddp_sigkill_then_resume_matches_the_uninterrupted_run(sst_like_dir, gpt_checkpoints):
    """Two processes each take their slice of every length-grouped batch, so the resumed run sees the same
    global batches mid-epoch (and each process restores its own dropout generator)."""
    # batches of 4 per process: the same 9 global batches of 8 an epoch as the one-process test
    ddp = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    ddp += ["--data.batch_size", "4", "--data.group_by_length", "true"]
    backbone = gpt_checkpoints["bpe"]
    finish(start_processes([*finetune_args(sst_like_dir, backbone, "straight"), *ddp]))
    straight = step_losses(Path("logs/gpt-sst2-finetune/straight"))
    run_dir = Path("logs/gpt-sst2-finetune/killed")
    process = start_processes([*finetune_args(sst_like_dir, backbone, "killed"), *ddp])
    wait_for_step(process, run_dir, 13)  # the middle of the second epoch, after the first epoch's checkpoint
    os.killpg(process.pid, signal.SIGKILL)  # both processes at once, as a lost machine
    process.wait()
    resume = start_processes([*finetune_args(sst_like_dir, backbone, "killed"), *ddp, "--ckpt_path", "last"])
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in finish(resume)
    resumed = step_losses(run_dir)
    assert len(straight) == 9 * EPOCHS and max(resumed) == max(straight)
    deltas = [abs(resumed[step] - straight[step]) for step in resumed if step >= 9]
    assert deltas and max(deltas) == 0.0
