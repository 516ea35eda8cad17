"""A sharded checkpoint folder (FSDP, FSDP2) -> one `.ckpt` file that loads on one CPU.

    python -m lightning_llm.consolidate logs/<run>/version_0/checkpoints/last.ckpt
    # writes logs/<run>/version_0/checkpoints/last.consolidated.ckpt

Wraps Lightning's consolidation utility (`lightning.pytorch.utilities.consolidate_checkpoint`), which reads
the shards with `torch.distributed.checkpoint` in a single process, and also accepts the folders written by
ModelParallelStrategy (FSDP2), whose weights sit under `state_dict` instead of FSDPStrategy's `model`.
The result loads with `LanguageModel.load_from_checkpoint` / `lightning-llm generate --ckpt_path ...`
and `lightning-llm predict --ckpt_path ...`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from jsonargparse import auto_cli
from lightning.fabric.utilities.load import _METADATA_FILENAME, _load_distributed_checkpoint

from lightning_llm.errors import UserError, exit_on_user_error


def default_output(checkpoint_folder: Path) -> Path:
    """`last.ckpt/` -> `last.consolidated.ckpt` next to it."""
    stem = checkpoint_folder.name.removesuffix(".ckpt")
    return checkpoint_folder.with_name(f"{stem}.consolidated.ckpt")


def consolidate(
    checkpoint_folder: str,
    output_file: str | None = None,
    optimizer: bool = True,
    overwrite: bool = False,
) -> Path:
    """Merge the shards of a sharded checkpoint folder into one checkpoint file; returns its path.

    Args:
        checkpoint_folder: The folder `fit` wrote under FSDP (`state_dict_type: sharded`) or FSDP2
            (`save_distributed_checkpoint: true`), e.g. `logs/<run>/version_0/checkpoints/last.ckpt`.
        output_file: Where to write; default `<name>.consolidated.ckpt` next to the folder.
        optimizer: Keep the optimizer states (`false` writes weights, hyperparameters and tokenizer only:
            smaller, and all that `generate` and `predict` need).
        overwrite: Replace an existing output file.
    """
    folder = Path(checkpoint_folder).expanduser()
    if not folder.exists():
        raise UserError(f"checkpoint {folder} does not exist")
    if not folder.is_dir() or not (folder / _METADATA_FILENAME).is_file():
        raise UserError(
            f"{folder} is not a sharded checkpoint folder (a directory with {_METADATA_FILENAME} and the "
            "shards); a single .ckpt file needs no consolidation"
        )
    output = Path(output_file).expanduser() if output_file else default_output(folder)
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists: pass --overwrite true or another --output_file")
    checkpoint = _load_distributed_checkpoint(folder)
    if "model" in checkpoint and "state_dict" not in checkpoint:  # FSDPStrategy's key
        checkpoint["state_dict"] = checkpoint.pop("model")
    optimizer_keys = sorted(
        (key for key in checkpoint if re.fullmatch(r"optimizer_\d+", key)), key=lambda k: int(k[10:])
    )
    states = [checkpoint.pop(key) for key in optimizer_keys]
    if optimizer and states:
        checkpoint["optimizer_states"] = states
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, output)
    print(f"wrote {output}", file=sys.stderr)
    return output


def main(args: list[str] | None = None) -> None:
    with exit_on_user_error():
        auto_cli(consolidate, args=args)


if __name__ == "__main__":
    main()
