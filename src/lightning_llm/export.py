"""A checkpoint -> a Hugging Face folder that `transformers` loads on its own.

    lightning-llm export --ckpt_path logs/minilm-sst2/version_0/checkpoints/last.ckpt --output_dir minilm-sst2
    python -c "from transformers import pipeline; print(pipeline('text-classification', model='minilm-sst2')('fun'))"

What each checkpoint becomes:
- a GPT language model: `GPT2LMHeadModel` (AutoModelForCausalLM), with its tokenizer and a generation config;
- a classifier on the GPT backbone: `GPT2ForSequenceClassification` (models/gpt2_format.py does both mappings);
- a classifier on an HF encoder: its own architecture, through `save_pretrained`.
Classifiers keep their label names (`id2label` / `label2id`), with LoRA adapters merged in. Any other network
(TransformerLM) is not GPT-2 shaped and is refused.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from lightning_llm.cli_help import run_command
from lightning_llm.errors import UserError
from lightning_llm.pretrained import quiet_transformers


def export(ckpt_path: str | None = None, output_dir: str | None = None, overwrite: bool = False) -> Path:
    """Write a checkpoint as a Hugging Face folder; returns the folder.

    Args:
        ckpt_path: A checkpoint written by `lightning-llm fit`: a GPT language model or a fine-tuned classifier.
        output_dir: The folder to write (created; its parent must exist).
        overwrite: Replace an existing `output_dir` (by default an existing folder is never touched).
    """
    if not ckpt_path or not output_dir:
        raise UserError("export needs --ckpt_path <checkpoint> and --output_dir <folder to create>")
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
    write, what = _folder_writer(ckpt_path)
    # Written beside the target and renamed at the end: a failed export leaves no half folder, and an
    # overwritten folder is replaced only once the new one is complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with quiet_transformers():  # no progress bar for one small file
            write(staging)
        if output.exists():  # swap by renames: a kill at any point leaves the old or the new folder whole
            previous = output.with_name(f".{output.name}.previous")
            output.rename(previous)
            staging.rename(output)
            shutil.rmtree(previous)
        else:
            staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {output} ({what})", file=sys.stderr)
    return output


def _folder_writer(ckpt_path: str) -> tuple[Callable[[Path], None], str]:
    """What writes this checkpoint's folder, and a few words on what it holds; every refusal comes before."""
    from lightning_llm.checkpoint_files import OWN_PACKAGE, model_description, read_checkpoint

    checkpoint = read_checkpoint(ckpt_path)
    saved = checkpoint.get("hyper_parameters")
    network = saved.get("model") if isinstance(saved, dict) else None
    network = str(network.get("class_path")) if isinstance(network, dict) else ""
    # Named before the network's settings are checked against their class: another network is the cause.
    # Only a class of ours is named here; a foreign one gets model_description's refusal (never imported).
    if network.startswith(OWN_PACKAGE) and network.rpartition(".")[2] != "GPT":
        _refuse_network(ckpt_path, network)
    hparams = model_description(checkpoint, ckpt_path)
    if str(hparams.get("_class_path") or "").endswith(".LanguageModel"):
        return _language_model_writer(ckpt_path)
    from lightning_llm.checkpoints import load_module
    from lightning_llm.lit.classifier import SequenceClassifier
    from lightning_llm.models.gpt_classifier import PAIR_SEPARATOR, GPTClassifier

    module = load_module(SequenceClassifier, ckpt_path).eval()
    labels = f"labels {', '.join(module.label_names)}"
    backbone = module.merged_backbone()
    if not isinstance(backbone, GPTClassifier):
        return module.save_pretrained, labels
    from lightning_llm.models.gpt2_format import gpt2_tokenizer, save_gpt2, to_gpt2_classifier

    model = to_gpt2_classifier(backbone, module.label_names)
    text_tokenizer = backbone.tokenizer.text_tokenizer
    tokenizer = gpt2_tokenizer(text_tokenizer, backbone.block_size, pad=True, pair_separator=PAIR_SEPARATOR)
    return lambda folder: save_gpt2(model, tokenizer, folder), f"GPT2ForSequenceClassification, {labels}"


def _language_model_writer(ckpt_path: str) -> tuple[Callable[[Path], None], str]:
    from lightning_llm.checkpoints import load_module
    from lightning_llm.lit.language_model import LanguageModel
    from lightning_llm.models.gpt import GPT
    from lightning_llm.models.gpt2_format import gpt2_tokenizer, save_gpt2, to_gpt2

    module = load_module(LanguageModel, ckpt_path).eval()
    if not isinstance(module.model, GPT):
        _refuse_network(ckpt_path, type(module.model).__name__)
    if module.tokenizer is None:
        raise UserError(
            f"checkpoint {ckpt_path} carries no tokenizer, so the export would have none; use a checkpoint "
            "written by `lightning-llm fit`"
        )
    model = to_gpt2(module.model)
    tokenizer = gpt2_tokenizer(module.tokenizer, module.model.block_size)
    return lambda folder: save_gpt2(model, tokenizer, folder), "GPT2LMHeadModel"


def _refuse_network(ckpt_path: str, network: str) -> None:
    raise UserError(
        f"checkpoint {ckpt_path} holds a {network.rpartition('.')[2]} network, which is not GPT-2 shaped: export "
        "writes GPT language models (as GPT-2) and fine-tuned classifiers; pretrain with a GPT config "
        "(e.g. configs/gpt-shakespeare-char.yaml) to export"
    )


# What `save_pretrained` writes for a model and its tokenizer: only a folder of these is replaced.
EXPORTED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
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
