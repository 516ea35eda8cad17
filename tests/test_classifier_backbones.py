"""SequenceClassifier on both backbones (HF encoder and the project's GPT): freezing and unfreezing, and LoRA
(only adapters and head train, merging keeps the logits, bad targets)."""

# Fixtures imported from the fixture modules come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from bert_fixtures import classifier_overrides, sst_like_dir, tiny_bert  # noqa: F401
from gpt_fixtures import gpt_checkpoints  # noqa: F401

from lightning_llm.callbacks.classification_metrics import ClassificationMetrics
from lightning_llm.cli import build_cli
from lightning_llm.data.classification import TextClassificationDataModule
from lightning_llm.errors import UserError
from lightning_llm.lit.classifier import SequenceClassifier
from lightning_llm.models.gpt_classifier import GPTClassifier
from lightning_llm.models.hf_encoder import HFEncoderClassifier
from lightning_llm.models.lora import LoRA, adapter_parameters, merged_copy, set_merged


@pytest.fixture(params=["gpt", "bert"])
def make_module(request, gpt_checkpoints, tiny_bert):
    def make(**kwargs) -> SequenceClassifier:
        if request.param == "gpt":
            backbone = GPTClassifier(str(gpt_checkpoints["bpe"]))
        else:
            backbone = HFEncoderClassifier(str(tiny_bert))
        return SequenceClassifier(backbone, **kwargs)

    return make


def fit(module: SequenceClassifier, folder: Path, steps: int = -1, epochs: int | None = None) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, TextClassificationDataModule(data_dir=str(folder), batch_size=8))
    return trainer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("freeze", [{"freeze": "backbone"}, {"freeze": "lower_layers", "frozen_layers": 1}])
def test_frozen_parameters_stay_bit_identical_after_training_steps(make_module, sst_like_dir, freeze):
    module = make_module(learning_rate=1e-2, weight_decay=0.1, **freeze)
    frozen = {id(p) for p in module.frozen}
    names = {id(p): name for name, p in module.named_parameters()}
    before = snapshot(module)
    trainer = fit(module, sst_like_dir, steps=3)
    moved = {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}
    assert frozen and not moved & {names[i] for i in frozen}
    assert {names[id(p)] for p in module.backbone.head_parameters()} <= moved
    assert not frozen & {id(p) for p in trainer.optimizers[0].state}  # no optimizer state, no weight decay


def test_unfreezing_at_an_epoch_trains_the_backbone_at_the_lower_rate(make_module, sst_like_dir):
    module = make_module(freeze="backbone", unfreeze_at_epoch=1, learning_rate=1e-2, backbone_lr_ratio=0.1)
    before = snapshot(module)
    trainer = fit(module, sst_like_dir, epochs=2)
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 4 and groups[2]["initial_lr"] == pytest.approx(1e-3)
    frozen_names = {name for name, p in module.named_parameters() if any(p is q for q in module.frozen)}
    assert all(not torch.equal(before[name], dict(module.named_parameters())[name]) for name in frozen_names)


def test_only_adapters_and_head_train_and_hold_optimizer_state(make_module, sst_like_dir):
    module = make_module(lora=LoRA(r=4, alpha=8), learning_rate=1e-2)
    head = {id(p) for p in module.backbone.head_parameters()}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert trainable == head | {id(p) for p in adapter_parameters(module.backbone)}
    before = snapshot(module)
    trainer = fit(module, sst_like_dir, steps=3)
    moved = {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}
    names = {id(p): name for name, p in module.named_parameters()}
    assert any("lora_B" in name for name in moved)  # B starts at zero: the update is no longer zero
    assert all("lora_" in name or id(dict(module.named_parameters())[name]) in head for name in moved)
    state = {names[id(p)] for p in trainer.optimizers[0].state}
    assert state == {names[i] for i in trainable}


def test_merged_logits_equal_unmerged_logits(make_module, sst_like_dir):
    module = make_module(lora=LoRA(r=4, alpha=8), learning_rate=1e-2)
    fit(module, sst_like_dir, steps=3)  # adapters away from their zero start
    module.eval()
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    with torch.no_grad():
        unmerged = module(**batch)
        set_merged(module.backbone, True)
        merged = module(**batch)
        set_merged(module.backbone, False)
        plain = merged_copy(module.backbone).eval()(**batch)
    assert not adapter_parameters(merged_copy(module.backbone))
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, unmerged, rtol=0, atol=1e-5)
    # unmerging subtracts the update again: the weights come back up to float rounding
    torch.testing.assert_close(module(**batch), unmerged, rtol=0, atol=1e-6)


def test_target_that_matches_nothing_names_the_layers_that_exist(make_module):
    with pytest.raises(UserError, match=r"target_modules 'qkv' matches no linear layer .* named .*") as error:
        make_module(lora=LoRA(target_modules=["qkv"]))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lora": LoRA(r=0)}, r"lora\.r is 0"),
        ({"lora": LoRA(alpha=0)}, r"lora\.alpha is 0"),
        ({"lora": LoRA(dropout=1.0)}, r"lora\.dropout is 1\.0"),
        ({"lora": LoRA(), "freeze": "backbone"}, "leave model.freeze at none"),
    ],
)
def test_bad_lora_settings_are_one_error(make_module, settings, message):
    with pytest.raises(UserError, match=message):
        make_module(**settings)


def test_the_head_cannot_be_a_lora_target(gpt_checkpoints):
    with pytest.raises(UserError, match="matches the new head"):
        SequenceClassifier(GPTClassifier(str(gpt_checkpoints["bpe"])), lora=LoRA(target_modules=["head"]))


def test_a_checkpoint_fine_tuned_with_another_tokenizer_is_refused(gpt_checkpoints):
    module = SequenceClassifier(GPTClassifier(str(gpt_checkpoints["bpe"])))
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    module.on_load_checkpoint(dict(checkpoint))  # the same pretrained checkpoint: loads
    other = SequenceClassifier(GPTClassifier(str(gpt_checkpoints["char"])))
    with pytest.raises(UserError, match="fine-tuned with another tokenizer"):
        other.on_load_checkpoint(checkpoint)


def test_backbone_lr_ratio_without_unfreezing_is_refused(gpt_checkpoints):
    with pytest.raises(UserError, match="unfreeze_at_epoch"):
        SequenceClassifier(GPTClassifier(str(gpt_checkpoints["bpe"])), backbone_lr_ratio=0.5)


def test_the_cli_adds_metrics_to_a_classifier_and_keeps_the_users_own(sst_like_dir, tiny_bert):
    args = classifier_overrides(sst_like_dir, tiny_bert)
    added = [c for c in build_cli(args, run=False).trainer.callbacks if isinstance(c, ClassificationMetrics)]
    assert len(added) == 1 and added[0].confusion_matrix
    own = ["--trainer.callbacks+=lightning_llm.callbacks.classification_metrics.ClassificationMetrics"]
    own += ["--trainer.callbacks.confusion_matrix", "false"]
    kept = [
        c
        for c in build_cli([*args, *own], run=False).trainer.callbacks
        if isinstance(c, ClassificationMetrics)
    ]
    assert len(kept) == 1 and not kept[0].confusion_matrix  # theirs, with their settings
