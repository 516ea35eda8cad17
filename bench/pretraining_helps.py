"""Does pretraining help? SST-2 dev accuracy of a small GPT fine-tuned on 1,000 / 8,000 / 67,349 labels.

Rows, all through `lightning-llm fit` with the shipped configs, each in its own process:
- `random init`: the GPT of configs/gpt-sst2-pretrain.yaml, its weights freshly initialised (same tokenizer);
- `pretrained, full`: that GPT after pretraining on unlabelled text, every weight fine-tuned;
- `pretrained, frozen`: only the new head trains;
- `pretrained, LoRA`: rank-8 adapters on the attention projections plus the head;
- `MiniLM` (configs/minilm-sst2.yaml): the pretrained reference, at 1,000 and 8,000 labels, fully
  fine-tuned and with LoRA.

Each (labels, seed) pair draws one random training subset that every row shares; accuracy is the last epoch's
on the 872 dev sentences (no picking the best epoch on dev). Needs a pretrained checkpoint:

    lightning-llm fit --config configs/gpt-sst2-pretrain.yaml --data.path '[...]'   # about 15 minutes
    python bench/pretraining_helps.py --checkpoint logs/gpt-sst2-pretrain/version_0/checkpoints/last.ckpt --full

Quick mode (`make bench`): 1,000 labels, one seed, random init against pretrained. Full mode: the whole
table, about an hour on 2 cores; results are written after every run, and `--resume` skips runs done.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

from harness import RESULTS, ROOT, SST2, machine, markdown_table, run_child, script_parser, write_results

ALL_LABELS = 67_349
# Passes over the labelled subset: small subsets need several to converge, the full set one.
EPOCHS = {1_000: 8, 8_000: 2, ALL_LABELS: 1}
GPT_CONFIG = ROOT / "configs" / "gpt-sst2-finetune.yaml"
MINILM_CONFIG = ROOT / "configs" / "minilm-sst2.yaml"
BACKBONE = "--model.init_args.backbone.init_args"
VARIANTS = {
    "random init": [f"{BACKBONE}.weights", "random"],
    "pretrained, full": [],
    "pretrained, frozen": ["--model.init_args.freeze", "backbone", "--model.init_args.learning_rate", "3e-3"],
    "pretrained, LoRA": [
        "--model.init_args.lora",
        "{r: 8, alpha: 16}",
        "--model.init_args.learning_rate",
        "1e-3",
    ],
    "MiniLM": [],
    "MiniLM, LoRA": [
        "--model.init_args.lora",
        "{r: 8, alpha: 16}",
        "--model.init_args.learning_rate",
        "1e-3",
    ],
}


def subset(folder: Path, sst2: Path, labels: int, seed: int) -> Path:
    """`labels` rows of SST-2's train.tsv drawn with `seed`, beside links to its dev and test files."""
    out = folder / f"n{labels}-seed{seed}"
    if out.is_dir():
        return out
    out.mkdir(parents=True)
    with open(sst2 / "train.tsv", encoding="utf-8", newline="") as file:
        header, *rows = list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    chosen = rows if labels >= len(rows) else random.Random(seed).sample(rows, labels)
    with open(out / "train.tsv", "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(
            file, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n"
        )
        writer.writerows([header, *chosen])
    for name in ("dev.tsv", "test.tsv"):
        (out / name).symlink_to((sst2 / name).resolve())
    return out


def fit_once(args: list[str], logs: str) -> None:
    """In the child: one `lightning-llm fit`, then the last val/acc and the mean training throughput as JSON."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_llm.cli import main

    main(
        [
            "fit",
            *args,
            "--trainer.logger.init_args.save_dir",
            logs,
            "--trainer.logger.init_args.version",
            "run",
        ]
    )
    [run_dir] = Path(logs).glob("*/run")
    events = EventAccumulator(str(run_dir)).Reload()
    speeds = [event.value for event in events.Scalars("train/examples_per_sec")]
    result = {"acc": events.Scalars("val/acc")[-1].value, "examples_per_sec": statistics.mean(speeds)}
    print(json.dumps(result))


def run(variant: str, labels: int, seed: int, data: Path, checkpoint: str, max_steps: int | None) -> dict:
    minilm = variant.startswith("MiniLM")
    config = MINILM_CONFIG if minilm else GPT_CONFIG
    args = ["--config", str(config), "--data.data_dir", str(data), "--seed_everything", str(seed)]
    args += ["--trainer.max_epochs", str(EPOCHS.get(labels, 1)), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]"]  # accuracy only
    if not minilm:
        args += [f"{BACKBONE}.checkpoint", checkpoint]
    args += VARIANTS[variant]
    if max_steps:
        args += ["--trainer.max_steps", str(max_steps)]
    with tempfile.TemporaryDirectory() as logs:
        child = [__file__, "--child", json.dumps(args), "--logs", logs]
        result = run_child(child)
    return {"variant": variant, "labels": labels, "seed": seed, **result}


def table(runs: list[dict]) -> str:
    """Mean ± spread (population standard deviation) of dev accuracy over the seeds, per variant and size."""
    sizes = sorted({run["labels"] for run in runs})
    rows = []
    for variant in VARIANTS:
        row = {"variant": variant}
        for size in sizes:
            accs = [r["acc"] for r in runs if r["variant"] == variant and r["labels"] == size and "acc" in r]
            if accs:
                spread = statistics.pstdev(accs) if len(accs) > 1 else 0.0
                row[str(size)] = f"{statistics.mean(accs):.3f} ± {spread:.3f} ({len(accs)})"
        speeds = [r["examples_per_sec"] for r in runs if r["variant"] == variant and "examples_per_sec" in r]
        rss = [r["peak_rss_mb"] for r in runs if r["variant"] == variant and "peak_rss_mb" in r]
        if speeds:
            row["speed"] = f"{statistics.median(speeds):.0f}"
            row["rss"] = f"{max(rss):,.0f}"
            rows.append(row)
    columns = [("variant", "fine-tuning", "")]
    columns += [(str(size), f"{size:,} labels: dev acc (seeds)", "") for size in sizes]
    columns += [("speed", "examples/s (median)", ""), ("rss", "peak RSS MB", "")]
    return markdown_table(rows, columns)


def main() -> None:
    parser = script_parser(
        __doc__,
        data=SST2,
        data_help="the SST-2 folder (train.tsv, dev.tsv)",
        full="the whole table (about an hour)",
    )
    parser.add_argument(
        "--checkpoint", help="the pretrained GPT (configs/gpt-sst2-pretrain.yaml's last.ckpt)"
    )
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the results file")
    parser.add_argument(
        "--labels", type=int, nargs="+", default=[1_000, 8_000, ALL_LABELS], help="full mode's sizes"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="full mode's seeds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--logs", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        return fit_once(json.loads(options.child), options.logs)
    checkpoint = options.checkpoint or _newest_pretrained()
    sst2 = Path(options.data)
    if checkpoint is None or not (sst2 / "train.tsv").is_file():
        print(
            "skipped: needs SST-2 (--data) and a pretrained GPT (--checkpoint, configs/gpt-sst2-pretrain.yaml)"
        )
        return
    if options.full:
        plan = [(n, s) for n in options.labels for s in options.seeds]
        variants = list(VARIANTS)
        max_steps = None
    else:  # a taste of the answer in two minutes: 1,000 labels, one seed, 60 steps
        plan, variants, max_steps = [(1_000, 1)], ["random init", "pretrained, full"], 60
    name = "pretraining_helps" if options.full else "pretraining_helps_quick"
    out = RESULTS / f"{name}.json"
    runs = json.loads(out.read_text())["rows"] if options.resume and out.is_file() else []
    done = {(r["variant"], r["labels"], r["seed"]) for r in runs if "error" not in r}
    document = {"mode": "full" if options.full else "quick", "machine": machine(), "checkpoint": checkpoint}
    with tempfile.TemporaryDirectory() as folder:
        for labels, seed in plan:
            data = subset(Path(folder), sst2, labels, seed)
            for variant in variants:
                if (variant, labels, seed) in done or (variant.startswith("MiniLM") and labels == ALL_LABELS):
                    continue
                runs.append(run(variant, labels, seed, data, checkpoint, max_steps))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
                # after each run, so a killed one keeps those done
                write_results(name, {**document, "rows": runs}, announce=False)
    print(table(runs))
    print(f"\nwrote {out.relative_to(ROOT)}")


def _newest_pretrained() -> str | None:
    found = sorted(
        (ROOT / "logs" / "gpt-sst2-pretrain").glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
    )
    return str(found[-1]) if found else None


if __name__ == "__main__":
    main()
