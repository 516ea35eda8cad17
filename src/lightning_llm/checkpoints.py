"""Checkpoints and Lightning: saved atomically, checked against the model, loaded into a LightningModule.

Reading a checkpoint file safely is `checkpoint_files.read_checkpoint` (no Lightning, so models use it too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_llm.atomic import atomic_open, remove_stale_temp_files
from lightning_llm.checkpoint_files import (
    model_description,
    read_checkpoint,
    refuse_unknown_settings,
    require_class,
)
from lightning_llm.errors import UserError

ModuleT = TypeVar("ModuleT", bound=pl.LightningModule)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint beside its target and rename it into place, flushed to disk first.

    Lightning's own writer stages the file in the system temp folder and moves it: a copy, not an atomic
    rename, when that folder is another filesystem (a tmpfs /tmp), and a killed run's copy is never removed.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's fsspec writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        remove_stale_temp_files(path.parent, target=path.name)
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Swap Lightning's default checkpoint writer for `AtomicCheckpointIO`; a writer the user chose stays."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def check_fits(checkpoint: dict[str, Any], module: torch.nn.Module, ckpt_path: str | Path) -> None:
    """Refuse a checkpoint of another model: name the first missing, extra or differently shaped parameter."""
    saved = checkpoint["state_dict"]  # read_checkpoint refused a file without one
    expected = module.state_dict()
    for name, tensor in expected.items():
        if name not in saved:
            raise UserError(
                f"checkpoint {ckpt_path} does not fit this model: it has no parameter {name!r}; "
                "use a checkpoint of the same model and config"
            )
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"checkpoint {ckpt_path} does not fit this model: {name} has shape {tuple(saved[name].shape)} "
                f"in the checkpoint but {tuple(tensor.shape)} in the model; use the config it was trained with"
            )
        if saved[name].dtype.is_floating_point != tensor.dtype.is_floating_point:
            raise UserError(
                f"checkpoint {ckpt_path} does not fit this model: {name} is {saved[name].dtype} in the checkpoint "
                f"but {tensor.dtype} in the model; use a checkpoint written by `lightning-llm fit`"
            )
        if saved[name].dtype.is_floating_point and not bool(torch.isfinite(saved[name]).all()):
            raise UserError(
                f"checkpoint {ckpt_path} holds NaN or infinite weights ({name}); use an earlier checkpoint"
            )
    extra = next((name for name in saved if name not in expected), None)
    if extra is not None:
        raise UserError(
            f"checkpoint {ckpt_path} does not fit this model: it has an unknown parameter {extra!r}; "
            "use a checkpoint of the same model and config"
        )


def load_module(cls: type[ModuleT], ckpt_path: str | Path, map_location: str = "cpu") -> ModuleT:
    """`cls.load_from_checkpoint` with a UserError for a missing, corrupt or foreign checkpoint."""
    checkpoint = read_checkpoint(ckpt_path)
    hparams = model_description(checkpoint, ckpt_path)
    require_class(hparams, cls.__name__, ckpt_path, "use a matching checkpoint")
    refuse_unknown_settings(hparams, ckpt_path, module=True)
    try:
        module = cls.load_from_checkpoint(
            Path(ckpt_path).expanduser(), map_location=map_location, weights_only=True
        )
    except RuntimeError as error:
        first = next(
            (
                line.strip()
                for line in str(error).splitlines()
                if any(w in line for w in ("size mismatch", "key(s)"))
            ),
            None,
        )
        if first is None:
            raise
        raise UserError(f"checkpoint {ckpt_path} does not fit this model: {first}") from None
    except ValueError as error:  # the model's own check of the settings the checkpoint carries
        if isinstance(error, UserError):
            raise
        raise UserError(
            f"checkpoint {ckpt_path} holds model settings that do not build a model: {error}"
        ) from None
    check_fits(
        checkpoint, module, ckpt_path
    )  # loading casts silently: an int or NaN weight would get through
    return module
