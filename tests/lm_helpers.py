"""Command-line overrides that shrink any language-model config to seconds on a CPU."""

from __future__ import annotations

from pathlib import Path


def tiny_lm_overrides(corpus: Path, model_class: str = "GPT") -> list[str]:
    model = "--model.init_args.model.init_args"
    sizes = (
        {"n_layer": 1, "n_head": 2, "n_embd": 16}
        if model_class == "GPT"
        else {"d_model": 16, "nhead": 2, "d_hid": 32, "nlayers": 1}
    )
    args = [
        "--data.path",
        str(corpus),
        "--data.block_size",
        "16",
        "--data.batch_size",
        "4",
        "--data.cache_dir",
        "cache",
    ]
    args += ["--data.bpe_vocab_size", "300", "--data.val_windows", "8", "--data.num_workers", "0"]
    for key, value in sizes.items():
        args += [f"{model}.{key}", str(value)]
    args += [
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.logger.init_args.save_dir",
        "logs",
    ]
    return args
