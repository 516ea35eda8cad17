"""`--quantize int8` for predict, validate and test: once the checkpoint's weights are loaded, the module's
network is replaced by a dynamically quantized copy (LoRA adapters merged in first)."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from lightning_llm.models.quantize import quantize_int8, serialized_megabytes


class Int8Inference(pl.Callback):
    """Runs evaluation and prediction with the network's Linear layers in int8 (CPU only)."""

    def __init__(self) -> None:
        self.done = False

    def _quantize(self, pl_module: pl.LightningModule) -> None:
        if self.done:
            return
        merged = getattr(pl_module, "merged_backbone", None)
        network = merged() if callable(merged) else pl_module.network
        before = serialized_megabytes(network)
        pl_module.network = quantize_int8(network)
        self.done = True
        rank_zero_info(
            f"int8: Linear layers quantized dynamically; weights {before:.1f} MB -> "
            f"{serialized_megabytes(pl_module.network):.1f} MB"
        )

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._quantize(pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._quantize(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._quantize(pl_module)
