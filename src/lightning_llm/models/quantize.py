"""Dynamic int8 quantization of a network's Linear layers, for inference on a CPU.

Weights are stored as int8 (one scale per output channel); activations are quantized batch by batch, so no
calibration data is needed. Measured on this project's 2-core AVX2 CPU (bench/int8.py), PyTorch's own
`torch.ao.quantization.quantize_dynamic` ran MiniLM 2.6x faster than fp32 and torchao's
`Int8DynamicActivationInt8WeightConfig` 1.3x, so the first is used while torch ships it (it is deprecated
in favour of torchao, which takes over where it is gone: `pip install torchao`).
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
from torch import nn

from lightning_llm.errors import UserError

Backend = Literal["torch.ao", "torchao"]
QUANTIZE_CHOICES = ("int8",)


def check_quantize(
    quantize: str | None, device: str | torch.device = "cpu", precision: str | None = None
) -> None:
    """Refuse a quantization that cannot run: an unknown kind, a GPU, a half-precision run."""
    if quantize is None:
        return
    if quantize not in QUANTIZE_CHOICES:
        raise UserError(f"--quantize is {quantize!r}: use int8, or leave it out for float32")
    if str(device).split(":")[0] != "cpu":
        raise UserError(
            f"--quantize int8 runs on the CPU (dynamic int8 kernels), not on {device}; drop one of them"
        )
    if precision is not None and str(precision) not in ("32", "32-true"):
        raise UserError(
            f"--quantize int8 computes in int8 and float32, not in precision {precision}; use precision 32-true"
        )


def default_backend() -> Backend:
    return "torch.ao" if hasattr(torch.ao.quantization, "quantize_dynamic") else "torchao"


def quantize_int8(network: nn.Module, backend: Backend | None = None) -> nn.Module:
    """A copy of `network` (in eval mode) whose nn.Linear layers compute in int8; the original is untouched.
    Embeddings and LayerNorms stay float32 (a tied lm_head is a Linear, so it is quantized; its embedding
    twin is not)."""
    backend = backend or default_backend()
    quantized = copy.deepcopy(network).eval()
    if backend == "torch.ao":
        with warnings.catch_warnings():  # its deprecation notice: chosen by measurement, see the module doc
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(quantized, {nn.Linear}, dtype=torch.qint8)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        raise UserError("--quantize int8 needs torchao with this torch: pip install torchao") from None
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return quantized


def serialized_megabytes(network: nn.Module) -> float:
    """The size of the network's state dict as torch.save writes it, in MB."""
    import io

    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6
