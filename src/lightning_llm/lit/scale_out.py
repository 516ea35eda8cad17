"""The scale-out hooks both LightningModules share: checkpoint / compile / shard, and clipping that works
under every preset."""

from __future__ import annotations

import lightning.pytorch as pl

from lightning_llm.parallel import clip_gradients, is_sharding_strategy, parallelize
from lightning_llm.parallel.sharded_checkpoints import install_safe_sharded_reads


class ScaleOutHooks(pl.LightningModule):
    """Mix in before `pl.LightningModule`; the module names its network in the `network` property and keeps
    its `compile` / `activation_checkpointing` choices in its hparams."""

    @property
    def network(self):
        """The module's network, the one that is checkpointed per block, compiled and sharded."""
        raise NotImplementedError

    def configure_model(self) -> None:
        """Per-block activation checkpointing, then compile, then FSDP2 sharding (`parallel.parallelize`).

        Lightning calls this before wrapping the module (DDP, FSDP) and before the optimizer exists;
        `fully_shard` applies only under ModelParallelStrategy, which sets `self.device_mesh`.
        `load_from_checkpoint` calls it without a Trainer: a loaded module stays eager (no compile wait).
        """
        if self._trainer is None:
            return
        if is_sharding_strategy(self.trainer.strategy):  # it may read a sharded checkpoint next: no code runs
            install_safe_sharded_reads()
        parallelize(
            self.network,
            self.device_mesh,
            compile=self.hparams.get("compile", False),
            activation_checkpointing=self.hparams.get("activation_checkpointing", False),
        )

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        # `trainer.gradient_clip_val` under every preset: also FSDPStrategy and bf16-mixed + fused AdamW
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
