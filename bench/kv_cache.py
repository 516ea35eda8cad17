"""Generation speed with the KV cache: `GPT.generate` (cache) against the same model running its whole context
every step (`kv_cache=False`) and against transformers' `GPT2LMHeadModel.generate` (its own cache) on the same
weights, converted by `lightning_llm.models.gpt2_format.to_gpt2`.

Batch 1, a 16-token prompt, greedy, fp32, random weights, at two shapes: GPT-2 124M (12 x 768, vocab 50304,
block 1024) with 256 new tokens (quick: 64), and the default config's (configs/gpt-pycode.yaml, read here) with
block_size - 16 new tokens, so the sequence fills the block but never passes it (past it the cache refills
itself, which the other two do not do alike). Each shape runs in its own process; there the three take turns,
in alternating order, and each ratio is the median over rounds of two figures measured next to each other.
Goals at 124M, 256 new tokens: the cache >= 5x no cache and >= 1.0x transformers.

    python bench/kv_cache.py          # quick: 64 new tokens at 124M, 1 round there, 3 at the small shape
    python bench/kv_cache.py --full   # 256 new tokens at 124M, 3 rounds at each shape
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from harness import ROOT, machine, report, run_child, script_parser, table_columns, threads_env

PROMPT_TOKENS = 16
GPT2_124M = {
    "vocab_size": 50304,
    "block_size": 1024,
    "n_layer": 12,
    "n_head": 12,
    "n_embd": 768,
    "bias": True,
}
METHODS = ("no cache", "cache", "transformers")
GOAL_OVER_NO_CACHE, GOAL_OVER_TRANSFORMERS = 5.0, 1.0
COLUMNS = table_columns(
    "run: {run}",
    "new tokens: {new_tokens}",
    "tokens/s (median): {tokens_per_s:.1f}",
    "ms/token: {ms_per_token:.1f}",
    "vs no cache (median of pairs): {vs_no_cache:.2f}",
    "vs transformers (median of pairs): {vs_transformers:.2f}",
    "same tokens as no cache: {same_tokens}",
)


def pycode_shape() -> dict[str, Any]:
    """The GPT shape of configs/gpt-pycode.yaml: its model arguments, BPE vocabulary and block size."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "gpt-pycode.yaml").read_text())
    model = config["model"]["init_args"]["model"]["init_args"]
    data = config["data"]["init_args"]
    keys = ("n_layer", "n_head", "n_embd", "bias")
    return {
        "vocab_size": data["bpe_vocab_size"],
        "block_size": data["block_size"],
        **{k: model[k] for k in keys},
    }


def shapes(full: bool) -> dict[str, tuple[dict[str, Any], int, int]]:
    """Shape name -> (GPT arguments, new tokens, rounds)."""
    pycode = pycode_shape()
    return {
        "GPT-2 124M": (GPT2_124M, 256 if full else 64, 3 if full else 1),
        "gpt-pycode": (pycode, pycode["block_size"] - PROMPT_TOKENS, 3),
    }


def transformers_generate(model: Any) -> Callable[[Any, int], Any]:
    """Greedy generation by transformers on `model`'s weights; raises when the conversion is missing or fails."""
    import torch

    from lightning_llm.models.gpt2_format import to_gpt2  # written alongside: may not be there yet

    hf = to_gpt2(model).eval()

    def generate(idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
        # min_new_tokens holds off the end-of-text token a random model may pick
        return hf.generate(
            idx,
            attention_mask=torch.ones_like(idx),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    return generate


def measure(shape: dict[str, Any], new_tokens: int, rounds: int) -> dict[str, Any]:
    """Tokens/s of each method per round, in alternating order, and whether each gives no cache's tokens."""
    import torch

    from lightning_llm.models import GPT

    torch.manual_seed(0)
    model = GPT(**shape).eval()
    idx = torch.randint(0, shape["vocab_size"], (1, PROMPT_TOKENS))
    runners: dict[str, Callable[[Any, int], Any]] = {
        "no cache": lambda x, n: model.generate(x, n, temperature=0, kv_cache=False),
        "cache": lambda x, n: model.generate(x, n, temperature=0),
    }
    errors: dict[str, str] = {}
    try:
        runners["transformers"] = transformers_generate(model)
    except Exception as error:  # a missing module or a failed conversion: the row says which
        errors["transformers"] = f"{type(error).__name__}: {error}"[:200]
    outputs: dict[str, Any] = {}
    for method, run in list(runners.items()):  # untimed warm-up: first-call allocations and dispatch
        try:
            run(idx, 4)
        except Exception as error:
            errors[method] = f"{type(error).__name__}: {error}"[:200]
            del runners[method]
    per_round: dict[str, list[float]] = {method: [] for method in runners}
    for round_index in range(rounds):
        order = list(runners) if round_index % 2 == 0 else list(runners)[::-1]
        for method in order:
            start = time.perf_counter()
            outputs[method] = runners[method](idx, new_tokens)
            per_round[method].append(new_tokens / (time.perf_counter() - start))
    reference = outputs.get("no cache")
    same = {
        method: bool(reference is not None and torch.equal(out.cpu(), reference))
        for method, out in outputs.items()
    }
    return {
        "tokens_per_s": per_round,
        "same_tokens": same,
        "errors": errors,
        "threads": torch.get_num_threads(),
    }


def paired(per_round: dict[str, list[float]], method: str, baseline: str) -> float | None:
    """Median over rounds of method / baseline tokens/s, each pair measured next to each other."""
    if method not in per_round or baseline not in per_round:
        return None
    return statistics.median(a / b for a, b in zip(per_round[method], per_round[baseline], strict=True))


def rows_of(name: str, new_tokens: int, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for method in METHODS:
        row: dict[str, Any] = {"run": f"{name}, {method}", "shape": name, "method": method}
        if "error" in result:  # the whole child failed
            rows.append({**row, "error": result["error"]})
            continue
        if method in result["errors"]:
            rows.append({**row, "error": result["errors"][method]})
            continue
        figures = result["tokens_per_s"][method]
        tokens_per_s = statistics.median(figures)
        rows.append(
            {
                **row,
                "new_tokens": new_tokens,
                "tokens_per_s": tokens_per_s,
                "ms_per_token": 1000 / tokens_per_s,
                "each_round": figures,
                "vs_no_cache": paired(result["tokens_per_s"], method, "no cache"),
                "vs_transformers": paired(result["tokens_per_s"], method, "transformers"),
                "same_tokens": result["same_tokens"][method],
            }
        )
    return rows


def main() -> None:
    parser = script_parser(__doc__, full="256 new tokens at 124M, 3 rounds at each shape")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's, one per core)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one shape, here
    parser.add_argument("--new-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = shapes(args.full)
    if args.one:
        shape, _, _ = chosen[args.one]
        print(json.dumps(measure(shape, args.new_tokens, args.rounds)))
        return
    before = machine()
    if args.threads is not None:
        before["torch_threads"] = args.threads
    rows, notes = [], []
    for name, (shape, new_tokens, rounds) in chosen.items():
        argv = [__file__, "--one", name, "--new-tokens", str(new_tokens), "--rounds", str(rounds)]
        result = run_child([*argv, *(["--full"] if args.full else [])], threads_env(args.threads))
        print(f"{name}: {result}", file=sys.stderr, flush=True)
        rows += rows_of(name, new_tokens, result)
        cache = next(row for row in rows if row["run"] == f"{name}, cache")
        over_no_cache, over_hf = cache.get("vs_no_cache"), cache.get("vs_transformers")
        notes.append(
            f"{name} ({shape['n_layer']} x {shape['n_embd']}, vocab {shape['vocab_size']}, block "
            f"{shape['block_size']}), {new_tokens} new tokens, {rounds} round(s): cache / no cache "
            + (f"{over_no_cache:.2f}x" if over_no_cache else "-")
            + ", ours / transformers "
            + (f"{over_hf:.2f}x" if over_hf else "- (no transformers figure)")
        )
    print(
        f"Greedy generation, batch 1, {PROMPT_TOKENS}-token prompt, fp32, random weights; "
        f"torch threads {before['torch_threads']}, load average {before['load_average_1m']}\n"
    )
    full_124m = args.full and chosen["GPT-2 124M"][1] == 256
    goals = (
        f"Goals at 124M, 256 new tokens: cache / no cache >= {GOAL_OVER_NO_CACHE:.0f}x, ours / transformers >= "
        f"{GOAL_OVER_TRANSFORMERS:.1f}x"
        + (
            ""
            if full_124m
            else " (quick mode generates 64 at 124M: the cache's lead grows with length; --full)"
        )
    )
    report(
        "kv_cache",
        args.full,
        rows,
        COLUMNS,
        machine=before,
        prompt_tokens=PROMPT_TOKENS,
        summary=notes,
    )
    print("\n" + "\n".join([*notes, goals]))


if __name__ == "__main__":
    main()
