"""A corpus tokenised once, in parallel, into litdata chunks that any number of processes and nodes stream.

Layout of a prepared folder:

    <output_dir>/lightning_llm.json   the manifest, written last: corpus hash, tokenizer settings, token counts
    <output_dir>/tokenizer.json       the tokenizer every rank loads (none encodes anything)
    <output_dir>/train/               litdata chunks (index.json + chunk-*.bin) of the training token ids
    <output_dir>/val.bin              the validation token ids, one flat array (every rank reads all of it)

The split is decided here, once: the corpus (files in order, as bytes) is cut at 1 - val_fraction of its size,
at a line end; what comes after is validation. The training part is cut into byte ranges of about
`RANGE_BYTES` at line ends, which litdata's workers encode in order; the validation part, small by design,
is encoded here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_llm.data.corpus import FileCorpus, is_table
from lightning_llm.data.object_store import (
    check_url,
    download,
    holds_objects,
    is_remote,
    join,
    read_bytes,
    upload_folder,
)
from lightning_llm.data.text_encoding import detect_encoding
from lightning_llm.data.token_cache import token_dtype, training_texts
from lightning_llm.errors import UserError
from lightning_llm.tokenizers import Tokenizer, load_tokenizer, tokenizer_from_json, train_tokenizer

MANIFEST = "lightning_llm.json"  # not *index.json: litdata deletes those when it overwrites a folder
MANIFEST_FORMAT = 1
PREFIX = "prepared:"  # data.path of a prepared folder
RANGE_BYTES = 2 << 20  # one unit of work for a worker: small enough that the workers finish together
ENCODE_CHARS = 1 << 20  # a worker encodes (and yields) a range this much at a time: its memory stays flat
PREPARE_FIX = "convert it to UTF-8 text or remove it from data.path"


def plan_ranges(files: Sequence[Path], val_fraction: float) -> tuple[list[tuple], list[tuple]]:
    """(path, start, end) byte ranges of the training and validation text, cut at line ends."""
    sizes = [file.stat().st_size for file in files]
    cut_at = int(sum(sizes) * (1.0 - val_fraction))
    train: list[tuple] = []
    val: list[tuple] = []
    offset = 0
    for file, size in zip(files, sizes, strict=True):
        start = 3 if _has_utf8_bom(file) else 0
        if offset + size <= cut_at:
            train += _ranges(file, start, size)
        elif offset >= cut_at:
            val += _ranges(file, start, size)
        else:  # the cut falls inside this file: at the first line end after it
            cut = _line_end_after(file, max(start, cut_at - offset))
            train += _ranges(file, start, cut)
            val += _ranges(file, cut, size)
        offset += size
    return train, val


def _has_utf8_bom(file: Path) -> bool:
    with open(file, "rb") as handle:
        return handle.read(3) == b"\xef\xbb\xbf"


def _line_end_after(file: Path, position: int) -> int:
    with open(file, "rb") as handle:
        handle.seek(position)
        handle.readline()
        return handle.tell()


def _ranges(file: Path, start: int, end: int) -> list[tuple]:
    ranges = []
    while start < end:
        stop = min(end, _line_end_after(file, min(end, start + RANGE_BYTES)))
        ranges.append((str(file), start, stop))
        start = stop
    return ranges


def encode_range(piece: tuple, tokenizer_json: str, dtype: str, done_dir: str) -> Iterator[np.ndarray]:
    """litdata's worker function: the token ids of one byte range, about ENCODE_CHARS of text at a time; a
    marker file in `done_dir` says the range was encoded whole (a killed worker leaves none)."""
    number, path, start, end = piece
    tokenizer = _tokenizer(tokenizer_json)
    for text in read_range(path, start, end):
        ids = encode(tokenizer, text)
        if len(ids):
            yield np.asarray(ids, dtype=dtype)
    Path(done_dir, str(number)).touch()


def read_range(path: str, start: int, end: int) -> Iterator[str]:
    """The text of a byte range, about ENCODE_CHARS at a time, in whole lines; a range that ends its file
    ends with a line break, as fit's corpus reader joins files (one file's last line never runs into the next)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            block = handle.read(min(remaining, ENCODE_CHARS))
            if not block:
                raise UserError(
                    f"{path} changed while it was being prepared; prepare again once it is written"
                )
            block += handle.readline() if remaining > len(block) else b""  # whole lines: no character is cut
            block = block[:remaining]
            remaining -= len(block)
            yield block.decode("utf-8", errors="replace")
        if end == os.fstat(handle.fileno()).st_size:
            yield "\n"


def encode(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """BPE through its bulk encoder (tiktoken: several times HF tokenizers' speed), characters directly."""
    encode_many = getattr(tokenizer, "encode_many", None)
    return encode_many([text])[0] if encode_many else tokenizer.encode(text)


@functools.lru_cache(maxsize=1)
def _tokenizer(tokenizer_json: str) -> Tokenizer:
    return tokenizer_from_json(tokenizer_json)  # once per worker process


def prepare_folder(
    files: Sequence[Path],
    output_dir: str | Path,
    workers: int,
    tokenizer_kind: str,
    bpe_vocab_size: int,
    val_fraction: float,
) -> Path | str:
    """Tokenise `files` into `output_dir`, a local folder or `s3://bucket/prefix` (see the module's docstring);
    a rerun with the same corpus and settings does nothing, a folder prepared from anything else is refused."""
    for file in files:
        if is_table(file):
            raise UserError(
                f"{file} is a table: prepare reads plain text files (fit's token cache reads tables)"
            )
        if detect_encoding(file, PREPARE_FIX) not in ("utf-8", "utf-8-sig"):
            raise UserError(f"{file} is not UTF-8: prepare cuts files at line ends in UTF-8; {PREPARE_FIX}")
    remote = is_remote(output_dir)
    output = check_url(str(output_dir)) if remote else Path(output_dir).expanduser()
    if not remote and not output.exists() and not output.parent.is_dir():
        raise UserError(
            f"--output_dir {output}: its parent folder {output.parent} does not exist; create it first"
        )
    if not remote and output.exists() and not output.is_dir():
        raise UserError(f"--output_dir {output} is a file; name a folder to create")
    corpus = FileCorpus(files)
    settings = {
        "tokenizer": tokenizer_kind,
        "bpe_vocab_size": bpe_vocab_size if tokenizer_kind == "bpe" else None,
        "val_fraction": val_fraction,
    }
    fingerprint = corpus.fingerprint()
    if remote:
        found = read_bytes(join(output, MANIFEST))
        if found is not None or holds_objects(output):
            manifest = None if found is None else parse_manifest(found, output)
            return _same_or_refuse(output, manifest, fingerprint, settings)
    elif output.exists():
        manifest = read_manifest(output) if (output / MANIFEST).is_file() else None
        return _same_or_refuse(output, manifest, fingerprint, settings)
    started = time.perf_counter()
    tokenizer = train_tokenizer(tokenizer_kind, training_texts(corpus, tokenizer_kind), bpe_vocab_size)
    trained = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size).name
    train, val = plan_ranges(files, val_fraction)
    if not train or not val:
        raise UserError(
            f"the corpus is too small to split at val_fraction {val_fraction}; give data.path more text"
        )
    # a remote folder is built here first, in the system's temporary folder, then uploaded
    staging = Path(tempfile.mkdtemp(prefix=".prepare.", dir=None if remote else output.parent))
    try:
        (staging / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
        _optimize(train, staging / "train", tokenizer.to_json(), dtype, workers)
        counts = {
            "train": _token_count(staging / "train"),
            "val": _write_tokens(val, tokenizer, staging / "val.bin", dtype),
        }
        manifest = {
            "format": MANIFEST_FORMAT,
            "corpus": {
                "fingerprint": fingerprint,
                "files": [str(f) for f in files],
                "describe": corpus.describe(),
            },
            **settings,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype,
            "tokens": counts,
            "workers": workers,
            "seconds": round(time.perf_counter() - started, 1),
            "seconds_tokenizer": round(trained - started, 1),  # one process: training the tokenizer
            "seconds_encode": round(time.perf_counter() - trained, 1),  # `workers` processes: encoding
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if remote:
            upload_folder(staging, output, last=MANIFEST)
            return _report(files, output, manifest)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the folder from the other nodes' users
        try:
            staging.rename(output)
        except OSError:
            raise UserError(
                f"--output_dir {output} appeared while this prepare ran (another prepare?); check it"
            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _report(files, output, manifest)


def _report(files: Sequence[Path], output: Path | str, manifest: dict) -> Path | str:
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    seconds, counts = manifest["seconds"], manifest["tokens"]
    print(
        f"prepared {output}: {megabytes:.1f} MB -> {counts['train']:,} training and {counts['val']:,} validation "
        f"tokens in {seconds:.1f} s ({megabytes / max(seconds, 1e-9):.1f} MB/s, {manifest['workers']} worker(s)); "
        f"train with --data.path {PREFIX}{output}",
        file=sys.stderr,
    )
    return output


def _same_or_refuse(
    output: Path | str, manifest: dict | None, fingerprint: str, settings: dict
) -> Path | str:
    if manifest is None:
        raise UserError(
            f"--output_dir {output} exists and is not a prepared folder (no manifest: other files, or a prepare "
            "cut off); name a new folder, or delete that one (prepare never writes into one that holds files)"
        )
    differs = [
        f"{key} {manifest.get(key)!r}" for key, value in settings.items() if manifest.get(key) != value
    ]
    if manifest["corpus"]["fingerprint"] != fingerprint:
        differs.insert(0, "another corpus")
    if differs:
        raise UserError(
            f"--output_dir {output} was prepared from {', '.join(differs)}: its chunks cannot mix with these; "
            "name a new --output_dir, or delete that folder to prepare it again"
        )
    print(f"{output} already holds this corpus, prepared with these settings: nothing to do", file=sys.stderr)
    return output


def _optimize(ranges: list[tuple], output: Path, tokenizer_json: str, dtype: str, workers: int) -> None:
    """litdata.optimize in a process of its own (it sets the start method, a Ctrl-C handler that exits with
    status 0, environment variables and the random seeds for the whole process), checked afterwards: every
    range must have been encoded whole."""
    scratch = Path(tempfile.mkdtemp(prefix="lightning-llm-prepare-"))
    numbered = [(number, *piece) for number, piece in enumerate(ranges)]
    child = multiprocessing.get_context("spawn").Process(
        target=_run_optimize, args=(numbered, str(output), tokenizer_json, dtype, workers, str(scratch))
    )
    try:
        child.start()
        done = _follow(child, scratch / "done", {number: end - start for number, _, start, end in numbered})
    except KeyboardInterrupt:
        child.terminate()
        child.join()
        raise UserError("prepare was interrupted: nothing was written; run the same command again") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if child.exitcode != 0 or done != len(ranges):
        raise UserError(
            f"encoding stopped after {done} of {len(ranges)} parts of the corpus (exit status {child.exitcode}; "
            "the lines above say why, e.g. memory or disk): nothing was written; fix that and prepare again"
        )


def _follow(child, done_dir: Path, sizes: dict[int, int]) -> int:
    """A progress bar of the text encoded (MB and MB/s, from the ranges the workers report done) until the
    child ends; returns how many ranges were done."""
    from tqdm import tqdm

    finished: set[int] = set()
    with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="encoding", file=sys.stderr) as bar:
        while True:
            alive = child.is_alive()  # read before the markers: none can be missed after the child ends
            new = {int(name) for name in os.listdir(done_dir)} - finished if done_dir.is_dir() else set()
            bar.update(sum(sizes[number] for number in new))
            finished |= new
            if not alive:
                child.join()
                return len(finished)
            time.sleep(0.5)


def _run_optimize(
    numbered: list[tuple], output: str, tokenizer_json: str, dtype: str, workers: int, scratch: str
) -> None:
    import litdata

    os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = f"{scratch}/chunks"  # else it deletes $TMPDIR/chunks
    os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = f"{scratch}/data"
    Path(scratch, "done").mkdir()
    litdata.optimize(
        fn=functools.partial(
            encode_range, tokenizer_json=tokenizer_json, dtype=dtype, done_dir=f"{scratch}/done"
        ),
        inputs=numbered,
        output_dir=output,
        num_workers=min(workers, len(numbered)),
        chunk_bytes="64MB",
        item_loader=litdata.TokensLoader(),
        keep_data_ordered=True,
        verbose=False,
    )


def _write_tokens(ranges: list[tuple], tokenizer: Tokenizer, path: Path, dtype: str) -> int:
    """Encode the ranges here into one flat file of token ids; returns how many."""
    count = 0
    with open(path, "wb") as handle:
        for piece in ranges:
            for text in read_range(*piece):
                ids = np.asarray(encode(tokenizer, text), dtype=dtype)
                handle.write(ids.tobytes())
                count += len(ids)
    return count


def _token_count(split: Path) -> int:
    index = json.loads((split / "index.json").read_text(encoding="utf-8"))
    return sum(chunk["dim"] for chunk in index["chunks"])


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder; one error naming the folder when it is missing or unreadable."""
    path = Path(folder).expanduser() / MANIFEST
    try:
        text = path.read_bytes()
    except OSError:
        text = b""
    return parse_manifest(text, path.parent)


def parse_manifest(text: bytes, folder: Path | str) -> dict[str, Any]:
    """A manifest's content; one error naming the folder when it is missing or damaged."""
    try:
        manifest = json.loads(text)
        if not isinstance(manifest, dict):
            raise ValueError
    except ValueError:
        raise UserError(
            f"{folder} is not a folder written by `lightning-llm prepare` ({MANIFEST} is missing or damaged); "
            "prepare it again"
        ) from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{folder} was prepared by another version of lightning-llm; prepare it again")
    return manifest


class PreparedFolder:
    """A prepared folder as training reads it: `local` holds its manifest, tokenizer and validation tokens (for
    one in object storage, a copy under `cache_dir` per version of it, fetched on first use); `train` is where
    litdata streams the training chunks from, into `chunk_cache` when they are remote. `version` names the
    folder's content (its manifest's digest). `str()` is the location the user gave."""

    def __init__(self, location: str, cache_dir: str | Path) -> None:
        self.remote = is_remote(location)
        self.location = location = check_url(location) if self.remote else location
        digest = hashlib.sha256(location.rstrip("/").encode()).hexdigest()[:16]
        self._copies = Path(cache_dir).expanduser() / "prepared" / digest
        self.train = join(location, "train") if self.remote else str(Path(location).expanduser() / "train")
        self._local: Path | None = None if self.remote else Path(location).expanduser()
        self._version: str | None = None

    def __str__(self) -> str:
        return self.location

    @property
    def local(self) -> Path:
        if self._local is None:
            self._fetch()
        return self._local

    @property
    def version(self) -> str:
        if self._version is None:
            text = self._fetch() if self.remote else (self.local / MANIFEST).read_bytes()
            self._version = hashlib.sha256(text).hexdigest()[:16]
        return self._version

    @property
    def chunk_cache(self) -> str | None:
        return str(self.local / "chunks") if self.remote else None

    def manifest(self) -> dict[str, Any]:
        """Its manifest; one error naming the folder when it is missing or damaged."""
        path = self.local / MANIFEST
        return parse_manifest(path.read_bytes() if path.is_file() else b"", self.location)

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.local / "tokenizer.json")

    def val_tokens(self) -> np.ndarray:
        """The validation token ids, read in place (every rank reads all of them)."""
        return np.memmap(self.local / "val.bin", dtype=np.dtype(self.manifest()["dtype"]), mode="r")

    def _fetch(self) -> bytes:
        """Copy the remote folder's manifest, tokenizer and validation tokens into a folder of this version's
        own (the manifest last: a copy with a manifest is whole); returns the manifest."""
        text = read_bytes(join(self.location, MANIFEST))
        if text is None:
            raise UserError(
                f"{self.location} is not a folder written by `lightning-llm prepare` ({MANIFEST} is missing); "
                "check the address, or prepare it"
            )
        parse_manifest(text, self.location)
        self._version = hashlib.sha256(text).hexdigest()[:16]
        self._local = self._copies / self._version
        if not (self._local / MANIFEST).is_file():
            for name in ("tokenizer.json", "val.bin", MANIFEST):
                download(join(self.location, name), self._local / name)
        return text
