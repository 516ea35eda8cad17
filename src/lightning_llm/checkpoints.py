"""Loading checkpoints safely (`weights_only=True`) with one clear error for each way it can go wrong."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TypeVar

import lightning.pytorch as pl

from lightning_llm.errors import UserError

ModuleT = TypeVar("ModuleT", bound=pl.LightningModule)


def load_module(cls: type[ModuleT], ckpt_path: str | Path, map_location: str = "cpu") -> ModuleT:
    """`cls.load_from_checkpoint`, with a UserError for a missing, corrupt or foreign checkpoint."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist; pass the .ckpt file written by `lightning-llm fit`"
        )
    try:
        return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as error:
        raise UserError(
            f"checkpoint {path} is truncated or corrupt ({error}); use another checkpoint"
        ) from None
    except RuntimeError as error:
        message = str(error)
        if "size mismatch" in message or "Missing key" in message or "Unexpected key" in message:
            first = next(
                (line.strip() for line in message.splitlines() if "size mismatch" in line), message[:300]
            )
            raise UserError(f"checkpoint {path} does not fit this model: {first}") from None
        if "zip archive" in message or "PytorchStreamReader" in message:
            raise UserError(f"checkpoint {path} is truncated or corrupt; use another checkpoint") from None
        raise
    except KeyError as error:
        raise UserError(
            f"checkpoint {path} was not written by {cls.__name__} (missing {error}); use a checkpoint of this model"
        ) from None
