"""Corpora that outgrow one machine: `lightning-llm prepare` with 1 and 2 workers, and training from the prepared
(streamed) folder against the memmap token cache.

Prepare: one child process per (corpus size, workers) prepares a fresh folder with byte-level BPE (2,048
tokens); the table splits its time into training the tokenizer (one process, a 64 MB sample at most) and
encoding (the workers), and gives the largest worker's peak RSS. Goals: encoding with 2 workers >= 1.8x of 1;
a worker's peak RSS flat in corpus size. The corpora are data_prep.py's (stdlib and package sources, Tiny
Shakespeare first), written to a temp dir.

Training: the Shakespeare recipe's shape (4 x 4 x 128, block 64, batch 12), fp32, validation off, from the
memmap cache and from a prepared folder of the same text, in alternating child processes; tokens/s over the
steps after a warm-up. Goal: streaming >= 0.95x the memmap cache.

    python bench/prepare_stream.py          # quick: 20 MB; 150 training steps x 2 rounds
    python bench/prepare_stream.py --full   # 20 and 200 MB; 400 steps x 3 rounds
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from data_prep import source_files, write_corpus
from harness import (
    ROOT,
    TINY_SHAKESPEARE,
    machine,
    report,
    run_child,
    script_parser,
    table_columns,
    threads_env,
)

WARMUP_STEPS = 20
COLUMNS = table_columns(
    "run: {run}",
    "corpus MB: {corpus_mb:.0f}",
    "workers: {workers}",
    "tokenizer s: {seconds_tokenizer:.1f}",
    "encode s: {seconds_encode:.1f}",
    "encode MB/s: {encode_mb_per_s:.1f}",
    "vs 1 worker: {vs_one_worker:.2f}",
    "worker peak RSS MB: {worker_peak_rss_mb:.0f}",
    "training tokens/s (median): {tokens_per_s:.0f}",
    "vs memmap (median of pairs): {vs_memmap:.2f}",
)


def prepare_once(corpus: str, workers: int, output: str) -> dict[str, Any]:
    """In the child: prepare `corpus` into `output`; the manifest's timings and the workers' peak RSS."""
    from lightning_llm.data.corpus import resolve_files
    from lightning_llm.data.prepared import MANIFEST, prepare_folder

    prepare_folder(resolve_files(corpus), output, workers, "bpe", 2048, 0.1)
    manifest = json.loads((Path(output) / MANIFEST).read_text())
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker, in MiB
    return {
        **{key: manifest[key] for key in ("seconds_tokenizer", "seconds_encode")},
        "worker_peak_rss_mb": worker_rss,
    }


def train_once(data_path: str, steps: int, workdir: str) -> dict[str, Any]:
    """In the child: the Shakespeare recipe from `data_path` for `steps` steps; tokens/s after the warm-up."""
    import os

    from lightning.pytorch import Callback

    from lightning_llm.cli import build_cli

    class Clock(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == WARMUP_STEPS:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    os.chdir(workdir)
    clock = Clock()
    config = str(ROOT / "configs" / "gpt-shakespeare-char.yaml")
    build_cli(
        ["fit", "--config", config, "--data.path", data_path, "--trainer.max_steps", str(steps),
         "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", "--trainer.logger", "false"],
        callbacks=[clock],
    )  # fmt: skip
    return {"tokens_per_s": (steps - WARMUP_STEPS) * 12 * 64 / (clock.end - clock.start)}


def main() -> None:
    parser = script_parser(
        __doc__, data=TINY_SHAKESPEARE, data_help="the text to train on", full="20 and 200 MB; more steps"
    )
    parser.add_argument("--one", nargs=4, help=argparse_hidden())
    args = parser.parse_args()
    if args.one:
        kind, first, second, third = args.one
        result = (
            prepare_once(first, int(second), third)
            if kind == "prepare"
            else train_once(first, int(second), third)
        )
        print(json.dumps(result))
        return

    facts = machine()
    rows: list[dict[str, Any]] = []
    sizes = (20, 200) if args.full else (20,)
    with tempfile.TemporaryDirectory() as scratch:
        sources = source_files()
        for size in sizes:
            corpus = Path(scratch) / f"corpus{size}"
            written = write_corpus(corpus, size * 10**6, sources)
            by_workers: dict[int, dict] = {}
            for workers in (1, 2):
                result = run_child(
                    [__file__, "--one", "prepare", str(corpus), str(workers), f"{scratch}/p{size}-{workers}"]
                )
                result.update(run="prepare, BPE 2,048", corpus_mb=written / 1e6, workers=workers)
                if "error" not in result:
                    result["encode_mb_per_s"] = written / 1e6 / max(result["seconds_encode"], 1e-9)
                    one = by_workers.get(1)
                    result["vs_one_worker"] = one and result["encode_mb_per_s"] / one["encode_mb_per_s"]
                by_workers[workers] = result
                rows.append(result)
                print(f"prepared {size} MB with {workers} worker(s)", file=sys.stderr, flush=True)

        # training: memmap cache against the prepared folder of the same text
        text = Path(args.data)
        prepared = Path(scratch) / "shakespeare"
        from lightning_llm.data.corpus import resolve_files
        from lightning_llm.data.prepared import prepare_folder

        prepare_folder(resolve_files(str(text)), prepared, 1, "char", 4096, 0.1)
        steps, rounds = (400, 3) if args.full else (150, 2)
        runs: dict[str, list[float]] = {"memmap": [], "stream": []}
        for index in range(rounds):
            order = ("memmap", "stream") if index % 2 == 0 else ("stream", "memmap")
            for name in order:
                path = str(text) if name == "memmap" else f"prepared:{prepared}"
                result = run_child(
                    [__file__, "--one", "train", path, str(steps), scratch], env=threads_env(None)
                )
                runs[name].append(result.get("tokens_per_s", float("nan")))
                print(f"trained from {name}: {result}", file=sys.stderr, flush=True)
        ratios = [stream / memmap for stream, memmap in zip(runs["stream"], runs["memmap"], strict=True)]
        for name in ("memmap", "stream"):
            rows.append(
                {
                    "run": f"training from the {'memmap cache' if name == 'memmap' else 'prepared folder'}",
                    "tokens_per_s": statistics.median(runs[name]),
                    "vs_memmap": 1.0 if name == "memmap" else statistics.median(ratios),
                }
            )
    report("prepare_stream", args.full, rows, COLUMNS, machine=facts, training_steps=steps, rounds=rounds)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
