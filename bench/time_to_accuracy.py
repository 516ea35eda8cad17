"""Wall time to a good SST-2 classifier: the project's MiniLM configs against the Hugging Face Trainer's epoch.

Per seed, one after the other on this machine: each project config as `lightning-llm fit` (a fresh process,
timed from launch; the time to the target is the wall clock of the first validation at or above it, read
from the run's TensorBoard events), then the HF `Trainer`'s best CPU setting on the same weights (one epoch,
group_by_length, fp32, batch 32, lr 5e-5, its other defaults; the same texts, tokenised once as `datasets.map`
would), timed from launch to the end of its epoch and its dev evaluation. The ratio is the Trainer's wall
time over the project's time to the target: the issue's goal is >= 1.5x, on every seed.

    python bench/time_to_accuracy.py          # quick (`make bench`): 24 steps each, checks both peers run
    python bench/time_to_accuracy.py --full   # seeds 42, 7 and 1234: about 70 minutes on 2 idle cores

A peer that fails (e.g. the Trainer without `accelerate`) fails the script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    SST2,
    machine,
    report,
    run_child,
    run_timed,
    scalar_events,
    script_parser,
    table_columns,
)

TARGET = 0.894  # the Trainer's one-epoch dev accuracy on this machine, rounded up (issue 18)
GOAL = 1.5  # the Trainer's epoch wall time over the project's time to TARGET
CONFIGS = ["configs/minilm-sst2-fast.yaml", "configs/minilm-sst2.yaml"]  # the quickest; the best in the time
HF = "HF Trainer (one epoch)"
QUICK_STEPS = 24
COLUMNS = table_columns(
    "seed: {seed}",
    "run: {run}",
    "s to dev >= 0.894: {seconds_to_target:.0f}",
    "wall s: {wall_s:.0f}",
    "final dev accuracy: {dev_accuracy:.4f}",
    "best dev accuracy: {best_dev_accuracy:.4f}",
    "train examples/s: {examples_per_s:.1f}",
    "speed-up (HF epoch / time to target): {speedup:.2f}",
)


def project_run(config: str, seed: int, quick: bool, work: Path) -> dict[str, Any]:
    """`lightning-llm fit --config <config>` from launch to exit, with its dev accuracy curve."""
    logs = work / "logs"
    command = [sys.executable, "-m", "lightning_llm", "fit", "--config", config, "--data.data_dir", str(SST2)]
    command += ["--seed_everything", str(seed), "--trainer.logger.init_args.save_dir", str(logs)]
    command += ["--trainer.enable_progress_bar", "false"]
    if quick:
        command += [
            "--trainer.max_steps",
            str(QUICK_STEPS),
            "--trainer.val_check_interval",
            str(QUICK_STEPS // 2),
        ]
    launched = time.time()  # event files carry wall-clock times
    seconds, status, last_line = run_timed(command, work / "fit.log")
    if status != 0:
        return {"error": last_line}
    curve = [(step, wall - launched, value) for step, wall, value in scalar_events(logs, "val/acc")]
    if not curve:
        return {"error": f"{config} logged no val/acc"}
    rates = [value for _, _, value in scalar_events(logs, "train/examples_per_sec")]  # of all processes
    return {
        "wall_s": seconds,
        "seconds_to_target": next((s for _, s, value in curve if value >= TARGET), None),
        "dev_accuracy": curve[-1][2],
        "best_dev_accuracy": max(value for _, _, value in curve),
        "examples_per_s": statistics.mean(rates) if rates else None,
        "dev_curve": curve,
    }


def hf_epoch(seed: int, steps: int | None) -> dict[str, Any]:
    """The HF Trainer's epoch (or `steps`) on MiniLM and SST-2, then its dev accuracy (a child process)."""
    from _minilm import dev_accuracy, pretokenised_sst2
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    datamodule, path = pretokenised_sst2()
    texts = datamodule.datasets["train"]
    train = [
        {"input_ids": ids, "labels": label} for ids, label in zip(texts.input_ids, texts.labels, strict=True)
    ]
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(datamodule.label_names))
    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(
            output_dir=output,
            per_device_train_batch_size=32,
            learning_rate=5e-5,
            num_train_epochs=1,
            max_steps=steps or -1,
            train_sampling_strategy="group_by_length",
            use_cpu=True,
            seed=seed,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(path))
        trainer = Trainer(model=model, args=arguments, train_dataset=train, data_collator=collate)
        metrics = trainer.train().metrics
    accuracy = dev_accuracy(model, datamodule)
    return {"dev_accuracy": accuracy, "examples_per_s": metrics["train_samples_per_second"]}


def hf_run(seed: int, quick: bool) -> dict[str, Any]:
    argv = [__file__, "--hf-child", str(seed), *(["--quick-child"] if quick else [])]
    start = time.perf_counter()
    result = run_child(argv, peak_rss=False)
    if "error" in result:
        return result
    wall = time.perf_counter() - start
    reached = result["dev_accuracy"] >= TARGET
    return {**result, "wall_s": wall, "seconds_to_target": wall if reached else None}


def main() -> None:
    parser = script_parser(__doc__, full="three seeds, every config to its end and the Trainer's whole epoch")
    parser.add_argument("--seeds", type=int, nargs="*", help="default: 42 (quick), 42 7 1234 (--full)")
    parser.add_argument(
        "--configs", nargs="*", default=CONFIGS, help="project configs (default: %(default)s)"
    )
    parser.add_argument(
        "--hf-wall-s",
        type=float,
        help="the Trainer's epoch wall time measured before: ratios use it, it does not run",
    )
    parser.add_argument("--hf-child", type=int, help=argparse.SUPPRESS)  # internal: the Trainer's run, here
    parser.add_argument("--quick-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_child is not None:
        print(json.dumps(hf_epoch(args.hf_child, QUICK_STEPS if args.quick_child else None)))
        return
    if not SST2.is_dir():
        sys.exit(f"error: SST-2 not found at {SST2}; put train.tsv and dev.tsv there")
    quick = not args.full
    before = machine()
    rows: list[dict[str, Any]] = []
    for seed in args.seeds or ([42, 7, 1234] if args.full else [42]):
        if args.hf_wall_s is None:
            hf = {"seed": seed, "run": HF, **hf_run(seed, quick)}
            print(json.dumps(hf), file=sys.stderr, flush=True)
        else:
            hf = {"seed": seed, "run": f"{HF}, measured before", "wall_s": args.hf_wall_s}
        for config in args.configs:
            with tempfile.TemporaryDirectory(prefix="time-to-accuracy-") as work:
                row = {"seed": seed, "run": Path(config).name, **project_run(config, seed, quick, Path(work))}
            print(json.dumps({k: v for k, v in row.items() if k != "dev_curve"}), file=sys.stderr, flush=True)
            if "error" not in row and "error" not in hf and row["seconds_to_target"]:
                row["speedup"] = hf["wall_s"] / row["seconds_to_target"]
            rows.append(row)
        if args.hf_wall_s is None:
            rows.append(hf)
    print(
        f"\nMiniLM-L6 on SST-2, wall time from launch to dev accuracy >= {TARGET} (872 dev sentences), "
        f"{before['cores']} cores, load {before['load_average_1m']}"
        + ("" if args.full else f"; quick: {QUICK_STEPS} steps each, the target is out of reach")
        + "\n"
    )
    summary = {}
    for config in args.configs:
        runs = [r for r in rows if r["run"] == Path(config).name and "error" not in r]
        speedups = [r.get("speedup") for r in runs]
        summary[config] = {
            "mean_speedup": statistics.mean(speedups) if runs and None not in speedups else None,
            "every_seed_reached": bool(runs) and None not in speedups,
            "mean_dev_accuracy": statistics.mean(r["dev_accuracy"] for r in runs) if runs else None,
        }
    report(
        "time_to_accuracy",
        args.full,
        rows,
        COLUMNS,
        machine=before,
        target=TARGET,
        goal=GOAL,
        summary=summary,
    )
    for config, facts in summary.items():
        if facts["mean_speedup"] is not None:
            verdict = "meets" if facts["mean_speedup"] >= GOAL else "misses"
            print(f"{config}: {facts['mean_speedup']:.2f}x the Trainer's epoch ({verdict} the {GOAL}x goal)")
        if facts["mean_dev_accuracy"] is not None:
            print(f"{config}: mean final dev accuracy {facts['mean_dev_accuracy']:.4f}")


if __name__ == "__main__":
    main()
