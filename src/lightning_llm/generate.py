"""Prompt -> text from a language-model checkpoint: `lightning-llm generate --ckpt_path ... --prompt ...`."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import auto_cli

from lightning_llm.checkpoint_files import read_checkpoint
from lightning_llm.checkpoints import load_module
from lightning_llm.errors import UserError, exit_on_user_error
from lightning_llm.lit.language_model import LanguageModel
from lightning_llm.models.quantize import check_quantize, quantize_int8
from lightning_llm.models.sampling import check_sampling_options

# Set by `make generate` to say how it chose the checkpoint; the checkpoint line repeats it.
CHOICE_ENV = "LIGHTNING_LLM_CKPT_CHOICE"
# ModelCheckpoint's file names in the shipped configs: step{step}-val{val/loss:.3f}.ckpt
VAL_LOSS_IN_NAME = re.compile(r"-val(\d+(?:\.\d+)?)\.ckpt$")


def generate(
    ckpt_path: str | None = None,
    prompt: str = "",
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int = 1337,
    device: str = "cpu",
    quantize: str | None = None,
) -> list[str]:
    """Print text continuing `prompt`, sampled from a checkpoint written by `lightning-llm fit`.

    Args:
        ckpt_path: The checkpoint (.ckpt); it carries the model config and the tokenizer.
        prompt: Text to continue; empty starts from a newline.
        max_new_tokens: Tokens to add to the prompt.
        temperature: Below 1 sharper, above 1 more random; 0 is greedy.
        top_k: Sample only from the k most likely tokens (None: all).
        top_p: Sample only from the smallest set of tokens whose probability reaches top_p (None: all).
        num_samples: Independent samples to print.
        seed: Random seed; the same seed gives the same text.
        device: "cpu", "cuda", "cuda:1", ...
        quantize: int8: the Linear layers in int8 (dynamic quantization, CPU only), faster on a CPU.
    """
    if not ckpt_path:  # make passes "" when there is no run to choose from
        raise UserError("name a checkpoint: --ckpt_path logs/<run>/version_<n>/checkpoints/last.ckpt")
    try:
        check_sampling_options(max_new_tokens, temperature, top_k, top_p)
    except ValueError as error:
        raise UserError(f"--{error}") from None
    if num_samples < 1:
        raise UserError(f"--num_samples is {num_samples}: it must be 1 or more")
    check_device(device)
    check_quantize(quantize, device)
    module = load_module(LanguageModel, ckpt_path, map_location=device)
    module.eval()
    if quantize:
        module.network = quantize_int8(module.network)
    print(checkpoint_line(ckpt_path), file=sys.stderr, flush=True)
    samples = []
    for i in range(num_samples):
        with torch.inference_mode():
            text = module.generate_text(prompt, max_new_tokens, temperature, top_k, top_p, seed=seed + i)
        samples.append(text)
        print(text)
        if i + 1 < num_samples:
            print("-" * 40)
    return samples


def checkpoint_line(ckpt_path: str) -> str:
    """One line naming the checkpoint, its step and its validation loss (and how make chose it, if it did)."""
    checkpoint = read_checkpoint(ckpt_path)
    val_loss = val_loss_of(ckpt_path, checkpoint)
    loss = "not validated yet" if val_loss is None else f"val loss {val_loss:.3f}"
    line = f"checkpoint {ckpt_path}: step {checkpoint.get('global_step', '?')}, {loss}"
    choice = os.environ.get(CHOICE_ENV)
    return f"{line} ({choice})" if choice else line


def val_loss_of(ckpt_path: str, checkpoint: dict[str, Any]) -> float | None:
    """The val loss in the file name, else the newest one ModelCheckpoint saw (kept in its callback state)."""
    in_name = VAL_LOSS_IN_NAME.search(Path(ckpt_path).name)
    if in_name:
        return float(in_name.group(1))
    for key, state in (checkpoint.get("callbacks") or {}).items():
        score = state.get("current_score") if isinstance(state, dict) else None
        if (
            str(key).startswith("ModelCheckpoint")
            and state.get("monitor") == "val/loss"
            and score is not None
        ):
            return float(score)
    return None


def check_device(device: str) -> None:
    """A UserError for a device name torch does not know or this machine does not have."""
    try:
        wanted = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device name: use cpu, cuda, cuda:1, mps ...") from None
    available = {
        "cpu": 1,
        "cuda": torch.cuda.device_count(),
        "mps": int(torch.backends.mps.is_available()),
    }.get(wanted.type, 0)
    if (wanted.index or 0) >= available:
        raise UserError(f"--device {device!r}: this machine has no such device; use --device cpu")


def main(args: list[str] | None = None) -> None:
    with exit_on_user_error():
        auto_cli(generate, args=args)


if __name__ == "__main__":
    main()
