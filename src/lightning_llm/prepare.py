"""`lightning-llm prepare`: tokenise a corpus once, in parallel, into chunks that training streams.

    lightning-llm prepare --data.path "books/**/*.txt" --data.tokenizer bpe --data.bpe_vocab_size 2048 \
        --output_dir prepared/books --workers 8
    lightning-llm fit --config configs/gpt-pycode.yaml --data.path prepared:prepared/books

Every rank and node then reads the chunks (litdata's StreamingDataset) and the tokenizer beside them: no
process encodes anything, whatever the corpus size. See `data/prepared.py` for the folder's layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lightning_llm.cli_help import run_command
from lightning_llm.data.corpus import STDLIB, resolve_files
from lightning_llm.data.language_modeling import DEFAULT_BPE_VOCAB, check_corpus_settings
from lightning_llm.data.object_store import is_remote
from lightning_llm.errors import UserError


@dataclass(frozen=True)
class CorpusSettings:
    """The corpus and tokenizer, under fit's names for them (`--data.path`, `--data.tokenizer`, ...).

    Args:
        path: Text file(s), glob(s) or director(ies), as fit's data.path ("stdlib": this Python's sources).
        tokenizer: "char" or "bpe" (byte-level BPE trained here, once, on the corpus).
        bpe_vocab_size: Vocabulary size of the BPE tokenizer (default 4096).
        val_fraction: The corpus's last fraction (by size, cut at a line end) is held out for validation.
    """

    path: str | list[str] = STDLIB
    tokenizer: str = "char"
    bpe_vocab_size: int | None = None
    val_fraction: float = 0.1


DEFAULT_CORPUS = CorpusSettings()


def prepare(
    data: CorpusSettings = DEFAULT_CORPUS, output_dir: str | None = None, workers: int = 1
) -> Path | str:
    """Tokenise a corpus into a folder of token chunks (litdata), its tokenizer and a manifest.

    Args:
        data: The corpus and tokenizer.
        output_dir: The folder to create (its parent must exist), or one in object storage,
            `s3://<bucket>/<folder>` (boto3's AWS settings; AWS_ENDPOINT_URL for an S3-compatible store). A rerun
            with the same corpus and settings does nothing; one holding another corpus or tokenizer is refused.
        workers: Processes that encode the corpus side by side.
    """
    from lightning_llm.data.prepared import prepare_folder

    if not output_dir:
        raise UserError("prepare needs --output_dir <folder to create>")
    check_corpus_settings(data.tokenizer, data.bpe_vocab_size, data.val_fraction)
    if not 1 <= workers <= (os.cpu_count() or 1) * 4:
        raise UserError(f"--workers is {workers}: use 1 to {(os.cpu_count() or 1) * 4} processes")
    folders = [
        Path(entry).expanduser().resolve()
        for entry in ([data.path] if isinstance(data.path, str) else data.path)
    ]
    inside = [
        folder
        for folder in folders
        if folder.is_dir()
        and not is_remote(output_dir)
        and Path(output_dir).expanduser().resolve().is_relative_to(folder)
    ]
    if inside:  # its tokenizer and manifest would join the corpus of the next run
        raise UserError(
            f"--output_dir {output_dir} lies inside data.path {inside[0]}: prepare into a folder outside the corpus"
        )
    files = resolve_files(data.path)
    vocab_size = DEFAULT_BPE_VOCAB if data.bpe_vocab_size is None else data.bpe_vocab_size
    return prepare_folder(files, output_dir, workers, data.tokenizer, vocab_size, data.val_fraction)


def main() -> None:  # pragma: no cover - `python -m lightning_llm.prepare`
    run_command(prepare, None)
