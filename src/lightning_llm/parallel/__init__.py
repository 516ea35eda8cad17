"""Everything that knows about ranks and shards: per-block activation checkpointing, compilation and FSDP2
sharding (shared by every LightningModule), gradient norms and clipping over shards, and which folders and
forward passes need every rank. Reading sharded checkpoint folders safely is `sharded_checkpoints`.

`parallelize(model, device_mesh, compile, activation_checkpointing)` applies, in this order:
1. activation checkpointing of each repeated block (recompute its activations in the backward pass),
2. `torch.compile` of each block, in place (`block.compile()`), so parameter names stay clean,
3. `fully_shard` (FSDP2) of each block, then of the root, over `device_mesh` (skipped without a mesh).

The repeated blocks are `model.blocks` (GPT, TransformerLM) or, for other models such as a Hugging Face
BERT, the largest `nn.ModuleList` whose children all share one class (`bert.encoder.layer`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn as nn
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.constants import default_pg_timeout

from lightning_llm.errors import UserError

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch.distributed.device_mesh import DeviceMesh

# Marks a model that `parallelize` has already transformed: Lightning may call `configure_model` again
# (e.g. `trainer.test` after `trainer.fit`), and compiling or sharding twice would fail.
_DONE = "_lightning_llm_parallelized"


def repeated_blocks(module: nn.Module) -> nn.ModuleList:
    """The repeated layers of a model: `module.blocks`, else the largest ModuleList of one layer class."""
    blocks = getattr(module, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return blocks
    candidates = [
        child
        for child in module.modules()
        if isinstance(child, nn.ModuleList) and len(child) > 0 and len({type(layer) for layer in child}) == 1
    ]
    if not candidates:
        raise ValueError(
            f"{type(module).__name__} has no `blocks` ModuleList and no ModuleList of repeated layers to "
            "checkpoint, compile or shard"
        )
    return max(candidates, key=lambda layers: sum(p.numel() for p in layers.parameters()))


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ModelParallelStrategy for FSDP2 alone: by default every rank is a data-parallel rank.

    ModelParallelStrategy's "auto" mesh is (num_nodes, devices per node) with the second dimension named
    `tensor_parallel`, and Lightning's distributed samplers split the data over the first one only: on one
    node every rank would read the same batches. Here "auto" data parallelism with `tensor_parallel_size: 1`
    spans all ranks, so samplers give each rank its own share. `parallelize` shards over every rank either way.
    """

    def __init__(
        self,
        data_parallel_size: Literal["auto"] | int = "auto",
        tensor_parallel_size: Literal["auto"] | int = 1,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size,
            tensor_parallel_size,
            save_distributed_checkpoint,
            process_group_backend,
            timeout,
        )

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto" and self._tensor_parallel_size == 1:
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


def data_parallel_mesh(device_mesh: DeviceMesh) -> DeviceMesh:
    """A 1-D mesh of every rank: ModelParallelStrategy builds a 2-D (data_parallel, tensor_parallel) mesh
    with `tensor_parallel_size` = devices per node by default; without tensor parallelism both dimensions
    shard the parameters, so FSDP2 shards over all ranks (ZeRO-3) whatever the split."""
    if device_mesh.ndim == 1:
        return device_mesh
    return device_mesh._flatten("fsdp")


def parallelize(
    model: nn.Module,
    device_mesh: DeviceMesh | None = None,
    compile: bool = False,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """Checkpoint, compile and shard `model` block by block (in that order), in place; returns `model`.

    Args:
        model: A model exposing its repeated layers (see `repeated_blocks`).
        device_mesh: The mesh of ModelParallelStrategy (`LightningModule.device_mesh`); None leaves the
            parameters whole (single device, DDP, or Lightning's FSDPStrategy, which wraps by itself).
        compile: Compile each block with `torch.compile` (in place: `state_dict` keys do not change).
        activation_checkpointing: Recompute each block's activations in the backward pass.
    """
    if getattr(model, _DONE, False) or not (compile or activation_checkpointing or device_mesh is not None):
        return model
    blocks = repeated_blocks(model)
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        # The wrapper's state-dict hooks drop its `_checkpoint_wrapped_module.` prefix: keys stay clean.
        for index, block in enumerate(blocks):
            blocks[index] = checkpoint_wrapper(block)
    if compile:
        for block in blocks:
            block.compile()  # compiles the block's call in place; no `_orig_mod.` in parameter names
    if device_mesh is not None:
        from torch.distributed.fsdp import fully_shard

        mesh = data_parallel_mesh(device_mesh)
        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    setattr(model, _DONE, True)
    return model


def is_sharded(model: nn.Module) -> bool:
    """True when some parameter lives in shards across ranks (FSDP2 DTensor or FSDP1 flat parameters)."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters()) or any(
        isinstance(m, FullyShardedDataParallel) for m in model.modules()
    )


def gradient_norm(module: torch.nn.Module, wrapped: torch.nn.Module | None = None) -> torch.Tensor:
    """The L2 norm of all gradients of `module` as one vector, the same on every rank.

    DDP has already averaged the gradients; FSDP2 keeps them as DTensor shards (their norm is a DTensor);
    FSDP1 (`wrapped` is the root FullyShardedDataParallel) holds disjoint local shards, whose squared norms
    are summed over ranks: every rank joins that sum, also one whose shard has no gradient.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    fsdp1 = isinstance(wrapped, FullyShardedDataParallel) and torch.distributed.is_initialized()
    # FSDP1's root holds flat parameters that `module.parameters()` does not list.
    grads = [p.grad for p in (wrapped if fsdp1 else module).parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0) if grads else torch.zeros(())
    if isinstance(norm, DTensor):
        return norm.full_tensor()
    if fsdp1:
        device = next(wrapped.parameters()).device
        squared = norm.float().to(device) ** 2
        torch.distributed.all_reduce(squared)
        return squared.sqrt()
    return norm


def clip_gradients(
    module: pl.LightningModule,
    optimizer: torch.optim.Optimizer,
    gradient_clip_val: float | None = None,
    gradient_clip_algorithm: str | None = None,
) -> None:
    """`LightningModule.configure_gradient_clipping` that also clips where Lightning 2.6 refuses to:

    - Lightning's FSDPStrategy (FSDP1) by norm: its precision plugin has no handle on the root module and
      raises; the root `FullyShardedDataParallel.clip_grad_norm_` computes the norm over all shards.
    - bf16-mixed with a fused optimizer: Lightning refuses because a fused optimizer unscales fp16 gradients
      inside its step, but bf16 autocast scales nothing, so the gradients are already true values.

    Everything else (fp32, DDP, FSDP2's DTensor gradients, ...) goes through Lightning's own clipping.
    """
    trainer = module.trainer
    clip_val = trainer.gradient_clip_val if gradient_clip_val is None else gradient_clip_val
    algorithm = str(getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm) or "norm").lower()
    if not clip_val:
        return
    root = trainer.strategy.model
    from torch.distributed.fsdp import FullyShardedDataParallel

    if algorithm == "norm" and isinstance(root, FullyShardedDataParallel):
        root.clip_grad_norm_(clip_val)
        return
    if trainer.precision == "bf16-mixed" and getattr(optimizer, "defaults", {}).get("fused"):
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(params, clip_val)
        else:
            torch.nn.utils.clip_grad_value_(params, clip_val)
        return
    module.clip_gradients(optimizer, gradient_clip_val=clip_val, gradient_clip_algorithm=algorithm)


def every_rank_runs_the_model(trainer: pl.Trainer, module: nn.Module) -> bool:
    """True when a forward pass outside the training loop (sampling text) must run on every rank: with
    sharded parameters each forward pass is a collective that all ranks join."""
    return trainer.world_size > 1 and is_sharded(module)


def check_resumable_folder(path: str | Path, strategy: object) -> None:
    """A sharded checkpoint folder resumes only under a sharding strategy (the one that wrote it)."""
    if not is_sharding_strategy(strategy):
        raise UserError(
            f"checkpoint {path} is a sharded folder: resume it under the strategy and number of processes that "
            "wrote it (configs/trainer/fsdp2.yaml), or merge it for one process with "
            f"`lightning-llm consolidate {path}`"
        )


def is_sharding_strategy(strategy: object) -> bool:
    """True for the strategies that write (and read back) sharded checkpoint folders: FSDP and FSDP2."""
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, ModelParallelStrategy | FSDPStrategy)
