"""Training health: a NaN or infinite loss ends the run at once, naming the step, before it is saved."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from lightning_llm.errors import UserError


class StopOnNonFiniteLoss(pl.Callback):
    """Raise a UserError when the training loss is NaN or infinite; checkpoints already written stay intact."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            raise UserError(
                f"the training loss became {loss.item()} at step {trainer.global_step}; nothing was saved after "
                "that step, the last good checkpoint is kept. Lower model.learning_rate, set "
                "trainer.gradient_clip_val, or resume with --ckpt_path last"
            )
