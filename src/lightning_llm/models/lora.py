"""LoRA adapters on a classifier backbone, with `peft`: low-rank updates beside frozen pretrained weights.

`add_lora` wraps the named linear layers in place (their weights stay, now frozen, under `base_layer`), so a
checkpoint holds base weights and adapters and resumes exactly. `merged` folds the adapters into the weights
for prediction; `merged_copy` gives a plain network (no peft layers) for export.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from lightning_llm.errors import UserError

ADAPTER_MARK = "lora_"


@dataclass
class LoRA:
    """LoRA settings.

    Args:
        r: Rank of each low-rank update.
        alpha: Scale of the update (it is multiplied by alpha / r).
        dropout: Dropout on the adapters' input.
        target_modules: Names of the linear layers to adapt, matched against the end of each module's name
            (e.g. `query`, `value`, or `c_attn` for the project's GPT); empty: the backbone's attention
            projections.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)


def add_lora(
    network: nn.Module, settings: LoRA, default_targets: list[str], keep_training: list[nn.Parameter]
) -> None:
    """Wrap `network`'s target linear layers with LoRA adapters in place; afterwards only the adapters and the
    parameters in `keep_training` (the new head) have requires_grad."""
    from peft import LoraConfig, inject_adapter_in_model

    if settings.r < 1:
        raise UserError(f"model.lora.r is {settings.r}: the rank must be 1 or more (8 is common)")
    if not 0 < settings.alpha < float("inf"):
        raise UserError(f"model.lora.alpha is {settings.alpha}: it must be a positive number (e.g. 2 * r)")
    if not 0.0 <= settings.dropout < 1.0:
        raise UserError(f"model.lora.dropout is {settings.dropout}: it must be in [0, 1)")
    targets = list(settings.target_modules) or list(default_targets)
    _check_targets(network, targets, keep_training)
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets
    )
    inject_adapter_in_model(config, network)
    head = {id(parameter) for parameter in keep_training}
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(ADAPTER_MARK in name or id(parameter) in head)


def adapter_parameters(network: nn.Module) -> list[nn.Parameter]:
    return [parameter for name, parameter in network.named_parameters() if ADAPTER_MARK in name]


def set_merged(network: nn.Module, merged: bool) -> None:
    """Fold the adapters into their base weights (one matrix product per layer instead of three), or take
    them out again; training needs them unmerged."""
    from peft.tuners.lora import LoraLayer

    for module in network.modules():
        if isinstance(module, LoraLayer) and module.merged != merged:
            module.merge() if merged else module.unmerge()


def merged_copy(network: nn.Module) -> nn.Module:
    """A copy of `network` with every adapter merged and every peft layer replaced by its plain base layer."""
    from peft.tuners.lora import LoraLayer

    plain = copy.deepcopy(network)
    set_merged(plain, True)
    for name, module in list(plain.named_modules()):
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            parent = plain.get_submodule(parent_name) if parent_name else plain
            setattr(parent, child, module.get_base_layer())
    return plain


def _check_targets(network: nn.Module, targets: list[str], keep_training: list[nn.Parameter]) -> None:
    """Each target names at least one linear layer, and none is in the head (which trains in full)."""
    linear = {name: module for name, module in network.named_modules() if isinstance(module, nn.Linear)}
    head = {id(parameter) for parameter in keep_training}
    for target in targets:
        matches = [name for name in linear if name == target or name.endswith("." + target)]
        if not matches:
            names = sorted({name.rpartition(".")[2] for name in linear})
            raise UserError(
                f"model.lora.target_modules {target!r} matches no linear layer of the backbone; its linear "
                f"layers are named {', '.join(names)}"
            )
        in_head = [name for name in matches if any(id(p) in head for p in linear[name].parameters())]
        if in_head:
            raise UserError(
                f"model.lora.target_modules {target!r} matches the new head ({in_head[0]}), which always trains "
                "in full; name the backbone's layers only"
            )
