"""Command-line overrides that shrink any language-model config to seconds on a CPU, reading run logs, and
training runs in processes of their own (to kill them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

BPE_TINY = (
    "--data.tokenizer",
    "bpe",
    "--data.bpe_vocab_size",
    "300",
)  # a BPE small enough for the tiny corpus


def tiny_lm_overrides(corpus: Path, model_class: str = "GPT", tokenizer: str = "char") -> list[str]:
    model = "--model.init_args.model.init_args"
    sizes = (
        {"n_layer": 1, "n_head": 2, "n_embd": 16}
        if model_class == "GPT"
        else {"d_model": 16, "nhead": 2, "d_hid": 32, "nlayers": 1}
    )
    args = [
        "--data.path",
        str(corpus),
        "--data.block_size",
        "16",
        "--data.batch_size",
        "4",
        "--data.cache_dir",
        "cache",
    ]
    args += ["--data.val_windows", "8", "--data.num_workers", "0"]
    args += ["--data.bpe_vocab_size", "300"] if tokenizer == "bpe" else []
    for key, value in sizes.items():
        args += [f"{model}.{key}", str(value)]
    args += [
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.logger.init_args.save_dir",
        "logs",
    ]
    return args


SHAKESPEARE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "gpt-shakespeare-char.yaml"


def lm_fit_args(corpus: Path, steps: int, version: str) -> list[str]:
    args = [
        "fit",
        "--config",
        str(SHAKESPEARE_CONFIG),
        *tiny_lm_overrides(corpus),
        "--trainer.max_steps",
        str(steps),
    ]
    # validation (and the ModelCheckpoint's last.ckpt) every 4 steps; an epoch is 11 steps, so resumes land mid-epoch
    args += [
        "--trainer.val_check_interval",
        "4",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    return [*args, "--trainer.logger.init_args.version", version]


def step_losses(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


def write_tiny_corpus(path: Path) -> Path:
    """About 20k characters of varied English-like text, with the shipped configs' sample prompts."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "wizards",
        "quietly",
        "hex",
        "jolly",
        "kings",
    ]
    lines = []
    for i in range(600):
        lines.append(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(5 + i % 4)) + f" {i % 13}.")
        if i % 50 == 0:
            lines.append("ROMEO: def main(): return 0")  # the sample prompts of the shipped configs
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"training ended early:\n{process.stdout.read()}")
        if (run_dir / "checkpoints" / "last.ckpt").exists() and max(step_losses(run_dir), default=-1) >= step:
            return
        time.sleep(0.2)
    raise AssertionError("training did not reach the step in time")


def start_processes(args: list[str]) -> subprocess.Popen:
    """`python -m lightning_llm <args>`: Lightning's DDP launcher starts rank 1 with the same command line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "lightning_llm", *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def finish(process: subprocess.Popen) -> str:
    """Wait for a run of `start_processes` to succeed; its output."""
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output
