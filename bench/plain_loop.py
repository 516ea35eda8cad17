"""A plain PyTorch training loop (nanoGPT's train.py style) over the project's own model and data windows.

It is the yardstick the Lightning path is measured against: same GPT, same AdamW groups, same warmup +
cosine schedule, same random windows and the same fixed validation windows.

    python bench/plain_loop.py --data_path ../shared/data/tinyshakespeare.txt --steps 2000
"""

from __future__ import annotations

import json
import math
import time

import torch
from harness import script_parser

from lightning_llm.data.language_modeling import LanguageModelingDataModule
from lightning_llm.lit.schedules import warmup_cosine
from lightning_llm.models import GPT


def adamw(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float = 1e-8
) -> torch.optim.AdamW:
    """The project's AdamW: weight decay on matrices only, fused."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple, lr: float, clip: float
) -> torch.Tensor:
    """One nanoGPT-style step at learning rate `lr`: forward, backward, clip, update; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = batch
    _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss


def train_steps(model: torch.nn.Module, dm: LanguageModelingDataModule, steps: int, warmup: int) -> float:
    """Seconds for the training steps after the first `warmup` ones, nanoGPT style (no evaluation)."""
    optimizer = adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    batches = iter(dm.train_dataloader())
    start = 0.0
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        train_step(model, optimizer, next(batches), 1e-3 * warmup_cosine(step, 100, steps, 0.1), 1.0)
    return time.perf_counter() - start


def train(
    data_path: str,
    steps: int = 2000,
    eval_interval: int = 250,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    block_size: int = 64,
    batch_size: int = 12,
    learning_rate: float = 1e-3,
    min_lr: float = 1e-4,
    warmup_steps: int = 100,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.99),
    grad_clip: float = 1.0,
    seed: int = 1337,
    val_windows: int = 1000,
    threads: int | None = None,
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    dm = LanguageModelingDataModule(
        path=data_path, block_size=block_size, batch_size=batch_size, seed=seed, val_windows=val_windows
    )
    model = GPT(dm.vocab_size, block_size, n_layer, n_head, n_embd, dropout=0.0, bias=False)
    optimizer = adamw(model, lr=learning_rate, weight_decay=weight_decay, betas=betas)
    train_batches = iter(())
    val_loader = dm.val_dataloader()
    history = []

    def evaluate() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for x, y in val_loader:
                total += model(x, y)[1].item() * y.numel()
                count += y.numel()
        model.train()
        return total / count

    step_time = 0.0
    for step in range(steps):
        lr = learning_rate * warmup_cosine(step, warmup_steps, steps, min_lr / learning_rate)
        try:
            batch = next(train_batches)
        except StopIteration:
            train_batches = iter(dm.train_dataloader())
            batch = next(train_batches)
        t0 = time.perf_counter()
        train_step(model, optimizer, batch, lr, grad_clip)
        step_time += time.perf_counter() - t0
        if (step + 1) % eval_interval == 0 or step + 1 == steps:
            history.append((step + 1, round(evaluate(), 4)))
            print(f"step {step + 1}: val loss {history[-1][1]:.4f}", flush=True)
    tokens = steps * batch_size * block_size
    return {
        "val_loss": history[-1][1],
        "history": history,
        "wall_s": round(time.perf_counter() - started, 1),
        "train_tokens_per_s": round(tokens / step_time),
        "mfu_flops_per_token": model.flops_per_token(block_size),
        "ok": math.isfinite(history[-1][1]),
    }


if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(
        json.dumps(
            train(
                args.data_path,
                args.steps,
                seed=args.seed,
                warmup_steps=args.warmup_steps,
                threads=args.threads,
            )
        )
    )
