"""Lightning's overhead on the classifier: `lightning-llm fit --config configs/minilm-sst2.yaml` against a plain
PyTorch loop over the same MiniLM, the same batches (the project's data module and sampler, same seed), the
same fused AdamW groups, linear warmup/decay schedule and gradient clipping.

The Lightning side is the user's run (config callbacks, TensorBoard logger, progress bar) without validation;
each run is its own process, the two alternate `--repeats` times and the best of each counts (the CPU may be
shared). Target: Lightning >= 0.95x the plain loop's examples/s. The examples per CPU second of the process
are shown too: on a machine shared with other jobs they tell the overhead better than the wall clock (with
`--threads 1`, where no thread waits on another).

    python bench/classifier_overhead.py          # quick: 12 steps (2 untimed), one run each
    python bench/classifier_overhead.py --full   # 200 steps (10 untimed) x 3 repeats
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from harness import (
    SST2,
    machine,
    paired_ratio,
    report,
    run_child,
    script_parser,
    table_columns,
    threads_env,
)

TARGET = 0.95
COLUMNS = table_columns(
    "variant: {variant}",
    "examples/s (best): {examples_per_s:.1f}",
    "examples/s (each run): {runs}",
    "pad tokens: {pad_fraction:.1%}",
    "peak RSS MB: {peak_rss_mb:.0f}",
    "vs plain loop (median of pairs): {ratio:.3f}",
    "examples/CPU-s (best): {examples_per_cpu_s:.1f}",
    "vs plain, CPU time (median): {cpu_ratio:.3f}",
)


def lightning_run(steps: int, warmup: int) -> dict[str, Any]:
    from _minilm import BatchStats, LightningBatchStats, build_fit

    stats = BatchStats(warmup)
    with tempfile.TemporaryDirectory() as logs:
        overrides = ["--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0"]
        cli = build_fit(overrides, [LightningBatchStats(stats)], logs)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return stats.summary()


def plain_run(steps: int, warmup: int) -> dict[str, Any]:
    import torch
    import yaml
    from _minilm import CONFIG, BatchStats
    from lightning.fabric.utilities.seed import seed_everything
    from torch.nn import functional as F
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    from lightning_llm.data.classification import TextClassificationDataModule
    from lightning_llm.models.hf_encoder import HFTextEncoder
    from lightning_llm.pretrained import resolve_pretrained

    config = yaml.safe_load(CONFIG.read_text())
    hparams = config["model"]["init_args"]
    seed_everything(config["seed_everything"])  # what the CLI does first: the sampler's order follows it
    pretrained = hparams["backbone"]["init_args"]["pretrained"]
    datamodule = TextClassificationDataModule(**{**config["data"]["init_args"], "data_dir": str(SST2)})
    datamodule.tokenizer = HFTextEncoder(pretrained)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_pretrained(pretrained), num_labels=len(datamodule.label_names)
    ).train()
    datamodule.setup("fit")
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": hparams["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=hparams["learning_rate"],
        fused=True,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hparams["warmup_ratio"] * steps), steps)
    clip = config["trainer"]["gradient_clip_val"]
    stats = BatchStats(warmup)
    for step, batch in zip(range(steps), datamodule.train_dataloader(), strict=False):
        stats.batch_start(step, batch["attention_mask"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        stats.batch_end(step)
    return stats.summary()


RUNS = {"plain loop": plain_run, "lightning fit": lightning_run}


def main() -> None:
    parser = script_parser(__doc__, full="more steps and repeats: the figures in docs/benchmarks.md")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 20, --full 200)")
    parser.add_argument("--warmup", type=int, help="untimed first steps (default 4, --full 10)")
    parser.add_argument("--repeats", type=int, help="runs of each variant, alternating (default 2, --full 3)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's, one per core)")
    parser.add_argument("--one", choices=list(RUNS), help=argparse.SUPPRESS)  # internal: one run, here
    args = parser.parse_args()
    steps = args.steps or (200 if args.full else 12)
    warmup = args.warmup if args.warmup is not None else (10 if args.full else 2)
    if args.one:
        print(json.dumps(RUNS[args.one](steps, warmup)))
        return
    repeats = args.repeats or (3 if args.full else 1)
    before = machine()
    if args.threads is not None:
        before["torch_threads"] = args.threads
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    for repeat in range(repeats):
        # alternate the order, so a slow spell of a shared machine does not fall on one variant only
        for name in list(RUNS) if repeat % 2 == 0 else list(RUNS)[::-1]:
            argv = [__file__, "--one", name, "--steps", str(steps), "--warmup", str(warmup)]
            result = run_child(argv, threads_env(args.threads))
            runs[name].append(result)
            print(f"{name}: {result}", file=sys.stderr)
    rows = []
    for name, results in runs.items():
        good = [r for r in results if "error" not in r]
        if not good:
            rows.append({"variant": name, "error": results[-1]["error"]})
            continue
        best = max(good, key=lambda r: r["examples_per_s"])
        each = " / ".join(f"{r['examples_per_s']:.1f}" for r in good)
        cpu_best = max(r["examples_per_cpu_s"] for r in good)
        rows.append(
            {"variant": name, **best, "examples_per_cpu_s": cpu_best, "runs": each, "all_runs": results}
        )
    plain_runs = runs["plain loop"]
    for row in rows:
        if "error" not in row:
            # The median ratio of each repeat's back-to-back pair (see paired_ratio), by wall and CPU time.
            pair = paired_ratio(plain_runs, runs[row["variant"]], "examples_per_s")
            cpu_pair = paired_ratio(plain_runs, runs[row["variant"]], "examples_per_cpu_s")
            row["ratio"] = pair and pair["median"]
            row["cpu_ratio"] = cpu_pair and cpu_pair["median"]
    print(
        f"\nMiniLM-L6 on SST-2 (configs/minilm-sst2.yaml, batch 32, length-grouped, fp32), {steps} steps "
        f"({warmup} untimed) x {repeats} runs, {before['torch_threads']} threads, load {before['load_average_1m']}\n"
    )
    lightning = next((r for r in rows if r["variant"] == "lightning fit"), {})
    report(
        "classifier_overhead",
        args.full,
        rows,
        COLUMNS,
        machine=before,
        steps=steps,
        warmup=warmup,
        repeats=repeats,
        target_ratio=TARGET,
        target_met=lightning.get("ratio") is not None and lightning["ratio"] >= TARGET,
    )


if __name__ == "__main__":
    main()
