"""The console progress bar, telling runs measured in steps from runs measured in epochs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepAwareProgressBar(RichProgressBar):
    """Lightning's rich bar, without its `Epoch 0/-2` for a run bounded by `max_steps` (max_epochs -1)."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
