"""Data preparation speed and memory: what `lightning-llm fit` does before the first step of a language model.

For each tokenizer (char, and byte-level BPE with the gpt-pycode vocabulary) and each corpus size, one child
process runs `token_cache.build_or_load` on a fresh cache, exactly as the data module does: fingerprint the
corpus, train the tokenizer on its stream of text, encode it into the token file. The table shows MB/s of
each phase and the child's peak RSS; the same tokenizer on a 10x bigger corpus should need about the same
memory, because the corpus is streamed.

The corpora are generated in a temp dir (deleted afterwards) from real text: this Python's standard
library and the installed packages' sources plus Tiny Shakespeare, in a fixed random file order, so the
small corpus is a sample of the same mix as the big one.

    python bench/data_prep.py                  # 20 MB and 200 MB corpora (about 90 s), quick or --full
    python bench/data_prep.py --sizes-mb 4 16  # a faster look
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import TINY_SHAKESPEARE, machine, report, run_child, script_parser, table_columns

BPE_VOCAB = 2048  # configs/gpt-pycode.yaml
SHARD_BYTES = 16 << 20  # corpus files of about 16 MB, like a folder of text shards
TARGET_BPE_ENCODE_MB_S = 10.0
TARGET_RSS_RATIO = 1.5
COLUMNS = table_columns(
    "tokenizer: {tokenizer}",
    "corpus MB: {corpus_mb:.0f}",
    "fingerprint MB/s: {fingerprint_mb_s:.0f}",
    "train MB/s: {train_mb_s:.1f}",
    "encode MB/s: {encode_mb_s:.1f}",
    "train MB/CPU-s: {train_mb_cpu_s:.1f}",
    "encode MB/CPU-s: {encode_mb_cpu_s:.1f}",
    "build s: {total_s:.1f}",
    "tokens/byte: {tokens_per_byte:.3f}",
    "peak RSS MB: {peak_rss_mb:.0f}",
    "RSS vs smallest: {rss_vs_smallest:.2f}",
)


def source_files() -> list[Path]:
    """Real text to build corpora from: stdlib and site-packages sources, in a fixed shuffled order."""
    roots = {Path(sysconfig.get_paths()[key]) for key in ("stdlib", "purelib", "platlib")}
    files = sorted({f for root in roots for f in root.rglob("*.py") if f.is_file()})
    random.Random(0).shuffle(files)
    return files


def write_corpus(directory: Path, size_bytes: int, sources: list[Path]) -> int:
    """Fill `directory` with shards of the source files (Tiny Shakespeare first) up to `size_bytes`."""
    directory.mkdir(parents=True)
    written, shard, handle = 0, 0, None
    for source in ([TINY_SHAKESPEARE] if TINY_SHAKESPEARE.is_file() else []) + sources:
        if written >= size_bytes:
            break
        if handle is None or handle.tell() >= SHARD_BYTES:
            if handle is not None:
                handle.close()
            handle = open(directory / f"shard{shard:03d}.txt", "wb")  # noqa: SIM115 (closed on rotation)
            shard += 1
        data = source.read_bytes()[: size_bytes - written]
        handle.write(data + b"\n")
        written += len(data) + 1
    if handle is not None:
        handle.close()
    if written < size_bytes:
        raise SystemExit(
            f"error: only {written / 1e6:.0f} MB of source text found for a {size_bytes / 1e6:.0f} MB corpus"
        )
    return written


def build(kind: str, corpus_dir: str) -> dict[str, Any]:
    """Time `build_or_load` on a fresh cache, split into fingerprint, tokenizer training and encoding."""
    from lightning_llm.data import token_cache
    from lightning_llm.data.corpus import FileCorpus, resolve_files

    corpus = FileCorpus(resolve_files(corpus_dir))
    size_mb = sum(f.stat().st_size for f in corpus.files) / 1e6
    phases: dict[str, float] = {}  # wall seconds, and CPU seconds of all threads under "<phase>_cpu"

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started, cpu_started = time.perf_counter(), time.process_time()
            result = function(*args, **kwargs)
            phases[name] = time.perf_counter() - started
            phases[f"{name}_cpu"] = time.process_time() - cpu_started
            return result

        return wrapper

    corpus.fingerprint = timed("fingerprint", corpus.fingerprint)
    token_cache.train_tokenizer = timed("train", token_cache.train_tokenizer)
    with tempfile.TemporaryDirectory() as cache_dir:
        started, cpu_started = time.perf_counter(), time.process_time()
        cache = token_cache.build_or_load(corpus, cache_dir, kind, BPE_VOCAB)
        total, total_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        n_tokens = len(cache.tokens)
    # The rest is encoding and writing the token file.
    encode = total - phases["fingerprint"] - phases["train"]
    encode_cpu = total_cpu - phases["fingerprint_cpu"] - phases["train_cpu"]
    return {
        "corpus_mb": size_mb,
        "fingerprint_mb_s": size_mb / phases["fingerprint"],
        "train_mb_s": size_mb / phases["train"],
        "encode_mb_s": size_mb / encode,
        # Per CPU second of all threads: the rate a core gives, whatever else runs on the machine.
        "train_mb_cpu_s": size_mb / phases["train_cpu"],
        "encode_mb_cpu_s": size_mb / encode_cpu,
        "total_s": total,
        "tokens_per_byte": n_tokens / (size_mb * 1e6),
        "vocab_size": cache.tokenizer.vocab_size,
    }


def main() -> None:
    parser = script_parser(__doc__, full="20 MB and 200 MB corpora")
    parser.add_argument("--sizes-mb", type=int, nargs="*", help="corpus sizes (default 20 200)")
    parser.add_argument("--tokenizers", nargs="*", choices=["char", "bpe"], default=["char", "bpe"])
    parser.add_argument("--one", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.one:
        print(json.dumps(build(*args.one)))
        return
    sizes = sorted(args.sizes_mb or [20, 200])  # the pair: quick mode can afford it
    before = machine()
    sources = source_files()
    rows = []
    with tempfile.TemporaryDirectory(prefix="data-prep-") as temp:
        corpora = {}
        for size in sizes:
            corpora[size] = Path(temp) / f"corpus-{size}mb"
            write_corpus(corpora[size], size * 1_000_000, sources)
        for kind in args.tokenizers:
            smallest = None
            for size in sizes:
                result = run_child([__file__, "--one", kind, str(corpora[size])])
                print(f"{kind} {size} MB: {result}", file=sys.stderr)
                row = {"tokenizer": kind, **result}
                if "error" not in row:
                    smallest = smallest or row["peak_rss_mb"]
                    row["rss_vs_smallest"] = row["peak_rss_mb"] / smallest
                rows.append(row)
    print(
        f"\nbuild_or_load (fingerprint + train + encode to the token file), {before['cores']} cores, "
        f"load {before['load_average_1m']}; BPE vocabulary {BPE_VOCAB}\n"
    )
    good = [row for row in rows if "error" not in row]
    bpe_encode = min((row["encode_mb_s"] for row in good if row["tokenizer"] == "bpe"), default=None)
    rss_ratio = max((row["rss_vs_smallest"] for row in good), default=None)
    report(
        "data_prep",
        args.full,
        rows,
        COLUMNS,
        machine=before,
        sizes_mb=sizes,
        bpe_encode_mb_s_min=bpe_encode,
        rss_ratio_max=rss_ratio,
        targets={"bpe_encode_mb_s": TARGET_BPE_ENCODE_MB_S, "rss_ratio": TARGET_RSS_RATIO},
        targets_met=bpe_encode is not None
        and bpe_encode >= TARGET_BPE_ENCODE_MB_S
        and rss_ratio is not None
        and rss_ratio <= TARGET_RSS_RATIO,
    )


if __name__ == "__main__":
    main()
