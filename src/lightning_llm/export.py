"""A fine-tuned classifier checkpoint -> a Hugging Face folder that `transformers` loads on its own.

    lightning-llm export --ckpt_path logs/minilm-sst2/version_0/checkpoints/last.ckpt --output_dir minilm-sst2
    python -c "from transformers import pipeline; print(pipeline('text-classification', model='minilm-sst2')('fun'))"

The folder holds the weights (safetensors; LoRA adapters merged in), a config with the label names
(`id2label` / `label2id`) and the tokenizer the model was fine-tuned with. Classifiers on the HF-encoder
backbone export today; the GPT backbone's GPT-2 format comes with the language-model export.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from lightning_llm.cli_help import run_command
from lightning_llm.errors import UserError
from lightning_llm.pretrained import quiet_transformers


def export(ckpt_path: str | None = None, output_dir: str | None = None, overwrite: bool = False) -> Path:
    """Write a fine-tuned classifier as a Hugging Face folder; returns the folder.

    Args:
        ckpt_path: A checkpoint written by `lightning-llm fit` with a SequenceClassifier.
        output_dir: The folder to write (created; its parent must exist).
        overwrite: Replace an existing `output_dir` (by default an existing folder is never touched).
    """
    from lightning_llm.checkpoints import load_module
    from lightning_llm.lit.classifier import SequenceClassifier

    if not ckpt_path or not output_dir:
        raise UserError(
            "export needs --ckpt_path <fine-tuned checkpoint> and --output_dir <folder to create>"
        )
    output = Path(output_dir).expanduser()
    if output.exists() and not output.is_dir():
        raise UserError(f"--output_dir {output} is a file; name a folder to create")
    if output.exists() and not overwrite:
        raise UserError(f"--output_dir {output} already exists: pass --overwrite true or name a new folder")
    if output.exists():
        refuse_replacing(output, Path(ckpt_path))
    if not output.parent.is_dir():
        raise UserError(
            f"--output_dir {output}: its parent folder {output.parent} does not exist; create it first"
        )
    module = load_module(SequenceClassifier, ckpt_path).eval()
    # Written beside the target and renamed at the end: a failed export leaves no half folder, and an
    # overwritten folder is replaced only once the new one is complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with quiet_transformers():  # no progress bar for one small file
            module.save_pretrained(staging)
        if output.exists():  # swap by renames: a kill at any point leaves the old or the new folder whole
            previous = output.with_name(f".{output.name}.previous")
            output.rename(previous)
            staging.rename(output)
            shutil.rmtree(previous)
        else:
            staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {output} (labels {', '.join(module.label_names)})", file=sys.stderr)
    return output


# What `save_pretrained` writes for a classifier and its tokenizer: only a folder of these is replaced.
EXPORTED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def refuse_replacing(output: Path, checkpoint: Path) -> None:
    """`--overwrite` replaces an earlier export only: never a folder holding anything else (the run's logs,
    the checkpoint being exported, the working directory)."""
    here = Path.cwd().resolve()
    target = output.resolve()
    if target == here or target in here.parents or target in checkpoint.expanduser().resolve().parents:
        raise UserError(
            f"--output_dir {output} holds the working directory or the checkpoint; name a new folder"
        )
    others = sorted(p.name for p in output.iterdir() if p.name not in EXPORTED_FILES)
    if others:
        raise UserError(
            f"--output_dir {output} holds files an export does not write ({', '.join(others[:3])}); "
            "--overwrite replaces an earlier export only: name a new folder"
        )


def main(args: list[str] | None = None) -> None:
    run_command(export, args)


if __name__ == "__main__":
    main()
