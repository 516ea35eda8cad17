"""A sequence classifier on the project's own GPT: the backbone comes from a `lightning-llm fit` checkpoint.

The GPT's transformer (embeddings, blocks, final LayerNorm) is loaded as trained; a fresh linear head reads the
hidden state of each row's last real token, as HF `GPT2ForSequenceClassification` does (or, with
`pooling: mean`, the mean over its real tokens). Attention is causal, so
that token has seen the whole text and none of the right padding after it: a padded batch gives each row the
logits it gets alone. The language-model head is dropped: it predicts tokens, not labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from lightning_llm.checkpoint_files import model_description, read_checkpoint, require_class
from lightning_llm.errors import UserError
from lightning_llm.models.gpt import GPT, GPTConfig
from lightning_llm.models.text_encoding import EncodedTexts, UnencodableText
from lightning_llm.tokenizers import END_OF_TEXT, BPETokenizer, Tokenizer, tokenizer_from_json

LANGUAGE_MODEL = "lightning_llm.lit.language_model.LanguageModel"
GPT_CLASS_PATHS = ("lightning_llm.models.GPT", "lightning_llm.models.gpt.GPT")
FREEZE_MODES = ("none", "backbone", "lower_layers")


class GPTClassifier(nn.Module):
    """A GPT pretrained with `lightning-llm fit`, pooled at each row's last real token, with a new linear head.

    Inputs are padded on the right; `pad_token_id` is the id to pad with: the BPE tokenizer's `<|endoftext|>`,
    or 0 for the character tokenizer, which has no special tokens (a real character then, harmless because the
    attention mask decides which tokens count and causal attention never lets a real token see the padding).

    Args:
        checkpoint: A `.ckpt` file written by `lightning-llm fit` with a GPT network; its weights and tokenizer
            become the backbone's.
        num_labels: Number of classes (1 for regression): the width of the new head.
        classifier_dropout: Dropout on the pooled hidden state, before the new head.
        weights: `pretrained` loads the checkpoint's weights; `random` keeps only its architecture and tokenizer
            and starts from a fresh initialisation: the baseline that shows what pretraining is worth.
        pooling: What the head reads: `last`, the hidden state of each row's last real token (GPT-2's choice:
            under causal attention it has seen the whole text); `mean`, the mean over the row's real tokens.
    """

    def __init__(
        self,
        checkpoint: str,
        num_labels: int = 2,
        classifier_dropout: float = 0.1,
        weights: Literal["pretrained", "random"] = "pretrained",
        pooling: Literal["last", "mean"] = "last",
    ) -> None:
        super().__init__()
        if num_labels < 1:
            raise UserError(f"num_labels is {num_labels}: it must be 1 (regression) or more classes")
        if not 0.0 <= classifier_dropout < 1.0:
            raise UserError(f"classifier_dropout is {classifier_dropout}: it must be in [0, 1)")
        saved = _read_language_model(checkpoint)
        gpt = _load_gpt(saved, checkpoint)
        if weights == "random":
            gpt.reset_parameters()
        elif weights != "pretrained":
            raise UserError(f"weights is {weights!r}: use 'pretrained' or 'random'")
        if pooling not in ("last", "mean"):
            raise UserError(f"pooling is {pooling!r}: use 'last' or 'mean'")
        self.pooling = pooling
        self.config: GPTConfig = gpt.config
        # Only the transformer is kept: lm_head predicts tokens, not labels; tied to wte, it held no other weights.
        self.transformer = gpt.transformer
        self.tokenizer = GPTTextEncoder(saved["tokenizer"], self.config.block_size)
        self.pad_token_id = self.tokenizer.pad_token_id
        self.num_labels = num_labels
        self.dropout = nn.Dropout(classifier_dropout)
        self.head = nn.Linear(self.config.n_embd, num_labels)
        nn.init.normal_(self.head.weight, std=self.config.init_std)
        nn.init.zeros_(self.head.bias)
        self.new_weights = ["head.weight", "head.bias"] if weights == "pretrained" else ["every weight"]

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def blocks(self) -> nn.ModuleList:
        """The GPT blocks, for freezing, sharding, compiling and activation checkpointing per block."""
        return self.transformer.h

    @property
    def lora_targets(self) -> list[str]:
        """The attention projections LoRA adapts by default: the fused query/key/value projection."""
        return ["c_attn"]

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The GPT's final hidden states (B, T, n_embd) after `ln_f`: what its lm_head would read."""
        T = input_ids.size(1)
        if self.block_size < T:
            raise ValueError(
                f"input of length {T} is longer than the GPT's block_size {self.block_size}: truncate it to "
                f"{self.block_size} tokens"
            )
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_labels) for token ids (B, T) padded on the right, with attention_mask (B, T) of 1 for
        real tokens and 0 for padding (None: every token is real). A GPT has no segment ids: token_type_ids
        must be None (sentence pairs are joined into one text by its tokenizer)."""
        if token_type_ids is not None:
            raise ValueError("a GPT backbone takes no token_type_ids: its tokenizer joins sentence pairs")
        hidden = self.hidden_states(input_ids)  # (B, T, C)
        last = _last_real_token(input_ids, attention_mask)  # (B,), also checks the mask is right-padded
        if self.pooling == "last":
            pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]  # (B, C)
        else:
            real = torch.arange(hidden.size(1), device=hidden.device) <= last[:, None]  # (B, T)
            weights = real.to(hidden.dtype) / (last[:, None] + 1).to(hidden.dtype)  # (B, T), rows sum to 1
            pooled = torch.einsum("bt,btc->bc", weights, hidden)  # (B, C)
        return self.head(self.dropout(pooled))  # (B, num_labels)

    def freeze(self, mode: str, frozen_layers: int = 0) -> list[nn.Parameter]:
        """Fix parameters (requires_grad False) and return them; everything else, the head always, trains.

        `none` freezes nothing; `backbone` freezes the whole GPT; `lower_layers` freezes the token and position
        embeddings and the first `frozen_layers` blocks. Each call starts from all parameters trainable.
        """
        if mode not in FREEZE_MODES:
            raise UserError(f"freeze mode {mode!r} is unknown: use one of {', '.join(FREEZE_MODES)}")
        blocks = self.transformer.h
        if not 0 <= frozen_layers <= len(blocks):
            raise UserError(
                f"frozen_layers is {frozen_layers} but the GPT has {len(blocks)} blocks: choose 0 to {len(blocks)}"
            )
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        frozen: list[nn.Parameter] = []
        if mode == "backbone":
            frozen = list(self.transformer.parameters())
        elif mode == "lower_layers":
            lower = [self.transformer.wte, self.transformer.wpe, *blocks[:frozen_layers]]
            frozen = [parameter for module in lower for parameter in module.parameters()]
        for parameter in frozen:
            parameter.requires_grad_(False)
        return frozen

    def head_parameters(self) -> list[nn.Parameter]:
        """The new head's parameters: they always train."""
        return list(self.head.parameters())


# Between the two texts of a pair: the GPT was pretrained on plain text, where a line break parts passages.
PAIR_SEPARATOR = "\n"


class GPTTextEncoder:
    """The pretrained checkpoint's char or BPE tokenizer, as the data module's `TextEncoder`.

    A sentence pair becomes one text, the two joined by a line break; no special tokens are added (the GPT
    was pretrained on plain text). Texts longer than `max_length` keep their first tokens; a pair is cut
    from its longer text first, so both texts stay in it.
    """

    def __init__(self, tokenizer_json: str, block_size: int) -> None:
        # the tokenizer as the checkpoint stores it: a fine-tuned checkpoint keeps it to check the pretrained one
        self.description = tokenizer_json
        self.text_tokenizer = tokenizer_from_json(tokenizer_json)
        self.pad_token_id = _pad_token_id(self.text_tokenizer)
        self.max_length = block_size

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> EncodedTexts:
        firsts = self._encode_all(texts)
        if pairs is None:
            truncated = sum(len(ids) > max_length for ids in firsts)
            return EncodedTexts([ids[:max_length] for ids in firsts], None, truncated)
        seconds = self._encode_all(pairs)
        separator = self.pair_separator_ids()
        joined, truncated = [], 0
        for whole_first, whole_second in zip(firsts, seconds, strict=True):
            first, second = _longest_first(whole_first, whole_second, max_length - len(separator))
            ids = (first + separator + second)[:max_length]
            truncated += len(ids) < len(whole_first) + len(separator) + len(whole_second)
            joined.append(ids)
        return EncodedTexts(joined, None, truncated)

    def pair_separator_ids(self) -> list[int]:
        """The line break's token ids; a tokenizer without it (a char vocabulary of one-line texts) cannot join pairs."""
        try:
            return self.text_tokenizer.encode(PAIR_SEPARATOR).tolist()
        except UserError:
            raise UserError(
                "this GPT's character tokenizer has no line break, which joins the two texts of a pair: pretrain "
                "on text with line breaks, or classify single texts (leave data.text_pair_column unset)"
            ) from None

    def _encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text; a text that cannot be encoded (empty, or characters a char tokenizer never
        saw) is named by its index and opening words."""
        encode_many = getattr(self.text_tokenizer, "encode_many", None)
        try:
            encoded = encode_many(list(texts)) if encode_many else None
        except UserError:
            encoded = None  # found again text by text below, to name the text
        input_ids = []
        for index, text in enumerate(texts):
            try:
                ids = (encoded[index] if encoded is not None else self.text_tokenizer.encode(text)).tolist()
            except UserError as error:
                raise UnencodableText(index, text, f"cannot be encoded: {error}") from None
            if not ids:
                raise UnencodableText(
                    index, text, "is empty: a GPT classifier reads at least one token per text"
                )
            input_ids.append(ids)
        return input_ids


def _longest_first(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Both texts of a pair cut to `budget` tokens together, taking from the longer one first (as
    `transformers`' `truncation="longest_first"`), so the second text is never cut away whole."""
    excess = len(first) + len(second) - max(budget, 2)
    if excess <= 0:
        return first, second
    keep_first, keep_second = len(first), len(second)
    gap = min(excess, abs(keep_first - keep_second))
    if keep_first >= keep_second:
        keep_first -= gap
    else:
        keep_second -= gap
    excess -= gap
    keep_first -= excess // 2  # an odd token more from the second text, as transformers does on a tie
    keep_second -= (excess + 1) // 2
    return first[:keep_first], second[:keep_second]


def _last_real_token(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Index (B,) of each row's last real token; a left-padded or empty row is refused, since it would pool
    padding (a left-padded row's tokens also attend to the padding before them)."""
    B, T = input_ids.shape
    if T == 0:
        raise ValueError("input_ids has no tokens: every row needs at least one")
    if attention_mask is None:
        return torch.full((B,), T - 1, dtype=torch.long, device=input_ids.device)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids {tuple(input_ids.shape)}: "
            "give one mask entry per token"
        )
    mask = attention_mask.long()  # (B, T)
    lengths = mask.sum(dim=1)  # (B,)
    bad = (mask[:, 1:] > mask[:, :-1]).any(dim=1) | (lengths == 0)  # (B,), one host sync below
    if bad.any():
        row = int(bad.nonzero()[0])
        if lengths[row] == 0:
            raise ValueError(f"row {row} of attention_mask has no tokens: every row needs at least one")
        raise ValueError(
            f"row {row} of attention_mask is not right-padded: pad after the text (ones first, then zeros)"
        )
    return lengths - 1


def _read_language_model(checkpoint: str | Path) -> dict[str, Any]:
    """The checkpoint of a GPT language model, or a UserError naming what it holds instead."""
    saved = read_checkpoint(checkpoint)
    _refuse_other_networks(saved.get("hyper_parameters"), checkpoint)
    hparams = model_description(saved, checkpoint)
    require_class(
        hparams,
        LANGUAGE_MODEL,
        checkpoint,
        "pass a checkpoint written by `lightning-llm fit` with a GPT config",
    )
    network = hparams.get("model")
    if not isinstance(network, dict) or not isinstance(network.get("init_args"), dict):
        raise UserError(
            f"checkpoint {checkpoint} does not describe its network (model.class_path and init_args), so the GPT "
            "cannot be rebuilt; pass a checkpoint written by `lightning-llm fit`"
        )
    if not isinstance(saved.get("tokenizer"), str):
        raise UserError(
            f"checkpoint {checkpoint} carries no tokenizer, so text cannot be encoded for its GPT; pass a "
            "checkpoint written by `lightning-llm fit`"
        )
    return saved


def _refuse_other_networks(hparams: Any, checkpoint: str | Path) -> None:
    """Named before the network's settings are checked against the GPT's: another network is the cause."""
    network = hparams.get("model") if isinstance(hparams, dict) else None
    if isinstance(network, dict) and network.get("class_path") not in GPT_CLASS_PATHS:
        raise UserError(
            f"checkpoint {checkpoint} holds a {network.get('class_path')} network, not a GPT; pretrain with a GPT "
            "config (e.g. configs/gpt-shakespeare-char.yaml) and pass that checkpoint"
        )


def _load_gpt(saved: dict[str, Any], checkpoint: str | Path) -> GPT:
    """The GPT rebuilt from the saved init_args with the saved weights (all of them, nothing else)."""
    try:
        gpt = GPT(**saved["hyper_parameters"]["model"]["init_args"])
    except (TypeError, ValueError) as error:
        raise UserError(f"checkpoint {checkpoint} describes a GPT that cannot be built: {error}") from None
    prefix = "model."
    weights = {name.removeprefix(prefix): tensor for name, tensor in saved["state_dict"].items()}
    try:
        gpt.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise UserError(
            f"checkpoint {checkpoint} does not fit the GPT its hyperparameters describe ({first}); pass an "
            "unmodified checkpoint written by `lightning-llm fit`"
        ) from None
    return gpt


def _pad_token_id(tokenizer: Tokenizer) -> int:
    """BPE pads with `<|endoftext|>`, as GPT-2 does; the character tokenizer has no special token, so 0."""
    if isinstance(tokenizer, BPETokenizer):
        ids = tokenizer.encode(END_OF_TEXT)
        if len(ids) == 1:
            return int(ids[0])
    return 0
