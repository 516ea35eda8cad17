"""Runs that survive: exact resume (mid-epoch too), SIGTERM/SIGINT, SIGKILL, and `--ckpt_path last`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_helpers import SHAKESPEARE_CONFIG, lm_fit_args, step_losses, wait_for_step

from lightning_llm.cli import main


def test_resume_mid_epoch_repeats_the_uninterrupted_losses_exactly(tiny_corpus):
    main(lm_fit_args(tiny_corpus, 20, "straight"))
    straight = step_losses(Path("logs/gpt-shakespeare-char/straight"))
    main(lm_fit_args(tiny_corpus, 10, "interrupted"))  # its last.ckpt is from step 8
    main([*lm_fit_args(tiny_corpus, 20, "interrupted"), "--ckpt_path", "last"])
    resumed = step_losses(Path("logs/gpt-shakespeare-char/interrupted"))
    assert len(straight) == 20
    for step in range(8, 20):
        assert resumed[step] == straight[step], f"step {step}: {resumed[step]} != {straight[step]}"


def test_ckpt_path_last_without_any_run_is_one_clear_error(tiny_corpus, capsys):
    with pytest.raises(SystemExit) as exited:
        main([*lm_fit_args(tiny_corpus, 4, "x"), "--ckpt_path", "last"])
    assert exited.value.code == 2
    assert "no last.ckpt under logs/gpt-shakespeare-char" in capsys.readouterr().err


def start_training(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    code = "import sys; from lightning_llm.cli import main; main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_resumable_checkpoint_and_exits_cleanly(tiny_corpus, signum, capsys):
    run_dir = Path("logs/gpt-shakespeare-char/preempted")
    process = start_training(lm_fit_args(tiny_corpus, 400, "preempted"))
    wait_for_step(process, run_dir, 5)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert f"Stopped by {signal.Signals(signum).name}" in output and "--ckpt_path last" in output
    assert "Traceback" not in output
    last = run_dir / "checkpoints" / "last.ckpt"
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert 5 <= stopped_at < 400
    # validating every step makes last.ckpt follow each step of the resumed run
    main(
        [
            *lm_fit_args(tiny_corpus, stopped_at + 3, "preempted"),
            "--ckpt_path",
            "last",
            "--trainer.val_check_interval",
            "1",
        ]
    )
    assert f"Resuming from {last}" in capsys.readouterr().err
    assert torch.load(last, weights_only=True)["global_step"] == stopped_at + 3


@pytest.mark.slow
def test_sigkill_then_resume_matches_the_uninterrupted_run(tiny_corpus):
    main(lm_fit_args(tiny_corpus, 24, "straight"))
    straight = step_losses(Path("logs/gpt-shakespeare-char/straight"))
    run_dir = Path("logs/gpt-shakespeare-char/killed")
    process = start_training(lm_fit_args(tiny_corpus, 24, "killed"))
    wait_for_step(process, run_dir, 13)
    process.kill()
    process.wait()
    main([*lm_fit_args(tiny_corpus, 24, "killed"), "--ckpt_path", "last"])
    resumed = step_losses(run_dir)
    for step in range(16, 24):
        assert resumed[step] == straight[step]
    for leftover in Path("logs").rglob("*"):
        assert ".tmp" not in leftover.name, f"half-written file left behind: {leftover}"


def recipe_args(text: Path, version: str) -> list[str]:
    """The real gpt-shakespeare-char recipe and its 2000-step schedule, stopped at step 360, logging each step."""
    args = ["fit", "--config", str(SHAKESPEARE_CONFIG), "--data.path", str(text), "--data.cache_dir", "cache"]
    args += ["--trainer.max_steps", "360", "--model.init_args.decay_steps", "2000"]
    args += ["--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"]
    return [
        *args,
        "--trainer.logger.init_args.save_dir",
        "logs",
        "--trainer.logger.init_args.version",
        version,
    ]


@pytest.mark.slow
def test_full_recipe_killed_at_step_300_resumes_with_the_same_losses(shakespeare):
    main([*recipe_args(shakespeare, "warm-cache"), "--trainer.max_steps", "1"])  # the cache both runs read
    uninterrupted = start_training(recipe_args(shakespeare, "straight"))  # one core each
    run_dir = Path("logs/gpt-shakespeare-char/killed")
    process = start_training(recipe_args(shakespeare, "killed"))
    wait_for_step(process, run_dir, 300)
    process.kill()
    process.wait()
    output, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, output
    straight = step_losses(Path("logs/gpt-shakespeare-char/straight"))
    main([*recipe_args(shakespeare, "killed"), "--ckpt_path", "last"])
    resumed = step_losses(run_dir)
    assert len(straight) == 360
    assert [resumed[step] for step in range(300, 360)] == [straight[step] for step in range(300, 360)]
