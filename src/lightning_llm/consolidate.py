"""A sharded checkpoint folder (FSDP, FSDP2) -> one `.ckpt` file that loads on one CPU.

    python -m lightning_llm.consolidate logs/<run>/version_0/checkpoints/last.ckpt
    # writes logs/<run>/version_0/checkpoints/last.consolidated.ckpt

Does the job of Lightning's `lightning.pytorch.utilities.consolidate_checkpoint`, reading the shards with
`torch.distributed.checkpoint` in a single process, but runs no code a crafted folder holds (see
`sharded_checkpoints`), and also accepts the folders written by ModelParallelStrategy (FSDP2), whose weights
sit under `state_dict` instead of FSDPStrategy's `model`.
The result loads with `LanguageModel.load_from_checkpoint` / `lightning-llm generate --ckpt_path ...`
and `lightning-llm predict --ckpt_path ...`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from lightning_llm.atomic import atomic_open
from lightning_llm.cli_help import run_command
from lightning_llm.errors import UserError
from lightning_llm.parallel.sharded_checkpoints import check_sharded_folder, load_sharded_checkpoint


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
    if folder.is_file():
        raise UserError(
            f"{folder} is a file, not a sharded checkpoint folder; a single .ckpt file needs no consolidation"
        )
    check_sharded_folder(folder)
    output = Path(output_file).expanduser() if output_file else default_output(folder)
    if output.is_dir() or output.resolve() == folder.resolve():
        raise UserError(f"--output_file {output} is a folder; name a .ckpt file")
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists: pass --overwrite true or another --output_file")
    checkpoint = load_sharded_checkpoint(folder)
    if "model" in checkpoint and "state_dict" not in checkpoint:  # FSDPStrategy's key
        checkpoint["state_dict"] = checkpoint.pop("model")
    optimizer_keys = sorted(
        (key for key in checkpoint if re.fullmatch(r"optimizer_\d+", key)), key=lambda k: int(k[10:])
    )
    states = [checkpoint.pop(key) for key in optimizer_keys]
    if optimizer and states:
        checkpoint["optimizer_states"] = states
    with atomic_open(output, "wb") as handle:  # a failed or killed write leaves any earlier file whole
        torch.save(checkpoint, handle)
    print(f"wrote {output}", file=sys.stderr)
    return output


def main(args: list[str] | None = None) -> None:
    run_command(consolidate, args)


if __name__ == "__main__":
    main()
