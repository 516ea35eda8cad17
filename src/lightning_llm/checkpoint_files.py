"""Reading a checkpoint file safely: tensors only (`weights_only=True`, no code runs), memory-mapped, with one
clear error for each way a file can be wrong. Plain torch, so models can use it without Lightning."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightning_llm.errors import UserError

_CORRUPT = (zipfile.BadZipFile, EOFError, pickle.UnpicklingError)


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents (memory-mapped, tensors only: no code runs), or a UserError saying what is wrong."""
    path = Path(ckpt_path).expanduser()
    require_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "weights_only" in str(error):
            raise UserError(
                f"checkpoint {path} holds Python objects besides tensors, which could run code, so it is not "
                "loaded; use a checkpoint written by `lightning-llm fit`"
            ) from None
        raise UserError(f"checkpoint {path} is truncated or corrupt; use another checkpoint") from None
    except _CORRUPT:
        raise UserError(f"checkpoint {path} is truncated or corrupt; use another checkpoint") from None
    except (OSError, RuntimeError) as error:
        # torch reports a damaged archive as a zip, mmap or stream-reader failure
        if isinstance(error, OSError) or any(w in str(error) for w in ("zip", "mmap", "PytorchStreamReader")):
            raise UserError(f"checkpoint {path} is truncated or corrupt; use another checkpoint") from None
        raise
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(
            f"checkpoint {path} is not a Lightning checkpoint (no state_dict of weights); use a .ckpt file "
            "written by `lightning-llm fit`"
        )
    return checkpoint


def require_checkpoint_file(path: Path) -> None:
    """A UserError unless `path` is a regular file: say what it is instead (missing, a folder, a device)."""
    if path.is_file():
        return
    if not path.exists():
        raise UserError(
            f"checkpoint {path} does not exist; pass the .ckpt file written by `lightning-llm fit`"
        )
    if path.is_dir():
        raise UserError(
            f"checkpoint {path} is a folder (a sharded FSDP checkpoint?); merge it into one file with "
            f"`lightning-llm consolidate {path}` and pass the .ckpt file it writes"
        )
    raise UserError(
        f"checkpoint {path} is not a regular file; pass the .ckpt file written by `lightning-llm fit`"
    )
