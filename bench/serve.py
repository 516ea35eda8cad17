"""`lightning-llm serve` against calling the classifier directly: requests/s of a MiniLM classifier served over
HTTP (one text per request) at concurrency 1 and 16, next to `predict_step` called in this process on the same
texts in batches of 1 and 16 (tokenising and padding included), the batches LitServe's dynamic batching forms
at best. The ratio is what HTTP, JSON and the worker queue cost; served at 16 over served at 1 is what dynamic
batching gains.

The checkpoint is the one `lightning-llm fit --config configs/minilm-sst2.yaml --trainer.max_steps 1` writes
(the offline MiniLM, a barely trained head: the speed is the same), on 64 sentences of ../shared/data/sst2 when
it is there, else of a generated TSV. The client runs on the same machine as the server: on 2 cores they
share them, as the direct calls do not have to.

    python bench/serve.py           # quick: 64 requests at concurrency 1, 256 at 16, 2 rounds
    python bench/serve.py --full    # 256 and 1024 requests, 3 rounds
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from harness import ROOT, SST2, machine, paired_ratio, report, script_parser, table_columns

CONFIG = ROOT / "configs" / "minilm-sst2.yaml"
CONCURRENCY = (1, 16)
COLUMNS = table_columns(
    "concurrency: {concurrency}",
    "served requests/s (best round): {served:.1f}",
    "served p50 ms: {p50_ms:.1f}",
    "direct requests/s (batch = concurrency): {direct:.1f}",
    "served / direct (median of rounds): {ratio:.2f}",
    "served vs concurrency 1: {gain:.2f}",
)


def sentences(count: int) -> list[str]:
    """SST-2 dev sentences when the data is there, else generated ones of 4 to 20 words."""
    if (SST2 / "dev.tsv").is_file():
        lines = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
        found = [line.split("\t")[0] for line in lines if line.strip()]
        return [found[i % len(found)] for i in range(count)]
    rng = random.Random(0)
    word = lambda: "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8)))  # noqa: E731
    return [" ".join(word() for _ in range(rng.randint(4, 20))) for _ in range(count)]


def fit_checkpoint(folder: Path) -> Path:
    """One optimizer step of `lightning-llm fit` on 64 training sentences: a checkpoint as users have them."""
    data = folder / "data"
    data.mkdir()
    if (SST2 / "train.tsv").is_file():
        rows = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[:65]
    else:
        rows = ["sentence\tlabel"] + [f"{text}\t{i % 2}" for i, text in enumerate(sentences(64))]
    for split in ("train.tsv", "dev.tsv"):
        (data / split).write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["--config", str(CONFIG), "--data.data_dir", str(data), "--trainer.max_steps", "1"]
    args += [
        "--trainer.logger.init_args.save_dir",
        str(folder / "logs"),
        "--trainer.enable_progress_bar",
        "false",
    ]
    subprocess.run(
        [sys.executable, "-m", "lightning_llm", "fit", *args], cwd=folder, check=True, capture_output=True
    )
    return folder / "logs" / "minilm-sst2" / "version_0" / "checkpoints" / "last.ckpt"


@contextlib.contextmanager
def served(ckpt: Path, folder: Path) -> Iterator[str]:
    """The server in a child process (its own session, stopped whatever happens); its URL once healthy."""
    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(folder / "serve.log", "w")  # noqa: SIM115 - closed below, after the server
    args = ["serve", "--ckpt_path", str(ckpt), "--port", str(port), "--max_batch_size", str(max(CONCURRENCY))]
    server = subprocess.Popen(
        [sys.executable, "-m", "lightning_llm", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not healthy(url, requests):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"error: the server did not start:\n{(folder / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


def healthy(url: str, requests) -> bool:
    with contextlib.suppress(requests.ConnectionError):
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    return False


def served_rate(url: str, texts: list[str], concurrency: int) -> tuple[float, float]:
    """Requests/s with `concurrency` clients sending one text each (kept-alive connections), and the median
    latency in ms."""
    import requests

    local = threading.local()

    def ask(text: str) -> float:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        start = time.perf_counter()
        reply = local.session.post(f"{url}/predict", json={"texts": [text]}, timeout=120)
        reply.raise_for_status()
        return time.perf_counter() - start

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(ask, texts[:concurrency]))  # connections and the worker warmed up, untimed
        start = time.perf_counter()
        latencies = list(pool.map(ask, texts))
        seconds = time.perf_counter() - start
    return len(texts) / seconds, statistics.median(latencies) * 1000


def direct_rate(module, max_length: int, texts: list[str], batch: int) -> float:
    """Requests/s of tokenising, padding and `predict_step` on `batch` texts at a time, in this process."""
    from lightning_llm.data.text_batches import PadToLongest

    collate = PadToLongest(module.tokenizer.pad_token_id)

    def run(chunk: list[str]) -> None:
        encoded = module.tokenizer.encode(chunk, None, max_length)
        with torch.inference_mode():
            module.predict_step(collate([{"input_ids": ids} for ids in encoded.input_ids]), 0)

    run(texts[:batch])  # untimed
    start = time.perf_counter()
    for begin in range(0, len(texts), batch):
        run(texts[begin : begin + batch])
    return len(texts) / (time.perf_counter() - start)


def alternate(rounds: int, measures: dict[str, Callable[[], object]]) -> dict[str, list]:
    results: dict[str, list] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def main() -> None:
    parser = script_parser(__doc__, full="256 and 1024 requests, 3 rounds")
    args = parser.parse_args()
    facts = {"machine": machine()}  # the load average before the runs
    rounds = 3 if args.full else 2
    counts = {1: 256, 16: 1024} if args.full else {1: 64, 16: 256}
    from lightning_llm.checkpoint_files import read_checkpoint
    from lightning_llm.serve import classifier_data, load_classifier

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        ckpt = fit_checkpoint(folder)
        module = load_classifier(str(ckpt), "cpu", None)
        max_length, _ = classifier_data(read_checkpoint(ckpt), module)
        rows = []
        with served(ckpt, folder) as url:
            for concurrency in CONCURRENCY:
                texts = sentences(counts[concurrency])
                measured = alternate(
                    rounds,
                    {
                        "direct": lambda t=texts, c=concurrency: direct_rate(module, max_length, t, c),
                        "served": lambda t=texts, c=concurrency: served_rate(url, t, c),
                    },
                )
                direct = [{"rate": rate} for rate in measured["direct"]]
                serving = [{"rate": rate} for rate, _ in measured["served"]]
                ratio = paired_ratio(direct, serving, "rate")
                best = max(measured["served"])
                rows.append(
                    {
                        "concurrency": concurrency,
                        "batch": concurrency,
                        "requests": len(texts),
                        "served": best[0],
                        "p50_ms": best[1],
                        "direct": max(r["rate"] for r in direct),
                        "ratio": ratio["median"] if ratio else None,
                        "served_rounds": [rate for rate, _ in measured["served"]],
                        "direct_rounds": [r["rate"] for r in direct],
                    }
                )
    for row in rows:
        row["gain"] = row["served"] / rows[0]["served"]
    report(
        "serve",
        args.full,
        rows,
        COLUMNS,
        machine=facts["machine"],
        threads=torch.get_num_threads(),
        data="SST-2 dev" if (SST2 / "dev.tsv").is_file() else "generated sentences",
        max_batch_size=max(CONCURRENCY),
    )


if __name__ == "__main__":
    main()
