"""Prompt -> text from a language-model checkpoint: `lightning-llm generate --ckpt_path ... --prompt ...`."""

from __future__ import annotations

import torch
from jsonargparse import auto_cli

from lightning_llm.checkpoints import load_module
from lightning_llm.errors import UserError, exit_on_user_error
from lightning_llm.lit.language_model import LanguageModel


def generate(
    ckpt_path: str | None = None,
    prompt: str = "",
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int = 1337,
    device: str = "cpu",
) -> list[str]:
    """Print text continuing `prompt`, sampled from a checkpoint written by `lightning-llm fit`.

    Args:
        ckpt_path: The checkpoint (.ckpt); it carries the model config and the tokenizer.
        prompt: Text to continue; empty starts from a newline.
        max_new_tokens: Tokens to add to the prompt.
        temperature: Below 1 sharper, above 1 more random; 0 is greedy.
        top_k: Sample only from the k most likely tokens (None: all).
        top_p: Sample only from the smallest set of tokens whose probability reaches top_p (None: all).
        num_samples: Independent samples to print.
        seed: Random seed; the same seed gives the same text.
        device: "cpu", "cuda", "cuda:1", ...
    """
    if ckpt_path is None:
        raise UserError("name a checkpoint: --ckpt_path logs/<run>/version_<n>/checkpoints/last.ckpt")
    module = load_module(LanguageModel, ckpt_path, map_location=device)
    module.eval()
    samples = []
    for i in range(num_samples):
        with torch.inference_mode():
            text = module.generate_text(prompt, max_new_tokens, temperature, top_k, top_p, seed=seed + i)
        samples.append(text)
        print(text)
        if i + 1 < num_samples:
            print("-" * 40)
    return samples


def main(args: list[str] | None = None) -> None:
    with exit_on_user_error():
        auto_cli(generate, args=args)


if __name__ == "__main__":
    main()
