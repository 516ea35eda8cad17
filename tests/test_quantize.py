"""`--quantize int8`: dynamic int8 Linear layers for CPU inference, on a GPT and through predict/validate."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import csv
import importlib.util
import logging

import pytest
import torch
from bert_fixtures import classifier_overrides, sst_like_dir, tiny_bert  # noqa: F401
from torch import nn

from lightning_llm.cli import main
from lightning_llm.errors import UserError
from lightning_llm.models import GPT
from lightning_llm.models.quantize import check_quantize, quantize_int8, serialized_megabytes

BACKENDS = ["torch.ao"] + (["torchao"] if importlib.util.find_spec("torchao") else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_gpt_stays_close_to_float32_and_leaves_the_original_alone(backend):
    torch.manual_seed(0)
    gpt = GPT(vocab_size=96, block_size=32, n_layer=2, n_head=4, n_embd=128).eval()
    idx = torch.randint(0, 96, (2, 32))
    with torch.no_grad():
        reference, _ = gpt(idx)
        quantized = quantize_int8(gpt, backend)
        logits, _ = quantized(idx)
    assert all(type(m) is nn.Linear for m in (gpt.lm_head, gpt.transformer.h[0].attn.c_attn))  # untouched
    if backend == "torch.ao":
        assert not any(type(m) is nn.Linear for m in quantized.modules())  # every Linear computes in int8
        assert serialized_megabytes(quantized) < serialized_megabytes(gpt) / 2
    # int8 rounding moves logits by a few percent of their spread, and keeps most top-1 tokens
    error = (logits - reference).abs()
    assert error.mean() < 0.05 * reference.std() and error.max() < 0.25 * reference.std()
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize(
    ("quantize", "device", "precision", "message"),
    [
        ("int4", "cpu", None, "use int8"),
        ("int8", "cuda", None, "runs on the CPU"),
        ("int8", "cpu", "bf16-mixed", "precision 32-true"),
    ],
)
def test_int8_settings_that_cannot_run_are_refused(quantize, device, precision, message):
    with pytest.raises(UserError, match=message):
        check_quantize(quantize, device, precision)


def test_validate_and_predict_in_int8_agree_with_float32(sst_like_dir, tiny_bert, caplog):
    args = classifier_overrides(sst_like_dir, tiny_bert)
    main(["fit", *args, "--trainer.max_epochs", "2", "--model.init_args.learning_rate", "1e-2"])
    checkpoint = "logs/minilm-sst2/version_0/checkpoints/last.ckpt"
    predicted = {}
    caplog.set_level(logging.INFO, logger="lightning.pytorch")  # whatever an earlier test in this process set
    for name, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        main(["predict", *args, "--data.predict", "dev.tsv", "--ckpt_path", checkpoint, *extra])
        with open("predictions/minilm-sst2.csv", encoding="utf-8", newline="") as file:
            predicted[name] = list(csv.DictReader(file))
    assert caplog.text.count("int8: Linear layers quantized") == 1
    assert len(predicted["int8"]) == len(predicted["fp32"]) == 12
    probabilities = [
        (float(a["probability"]), float(b["probability"])) for a, b in zip(*predicted.values(), strict=True)
    ]
    assert max(abs(a - b) for a, b in probabilities) < 0.05
    main(["validate", *args, "--ckpt_path", checkpoint, "--quantize", "int8"])
    assert caplog.text.count("int8: Linear layers quantized") == 2
