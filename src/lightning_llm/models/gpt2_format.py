"""The GPT in GPT-2's Hugging Face format and back, with its tokenizer: `transformers` loads an export as
`GPT2LMHeadModel` (a GPT classifier as `GPT2ForSequenceClassification`), and a GPT-2 folder imports as a GPT.

The layers are GPT-2's one to one, with three differences handled here:
- `nn.Linear` stores (out, in) where GPT-2's `Conv1D` stores (in, out): matrices are transposed;
- a GPT built with `bias=False` has no biases: GPT-2's are written as zeros;
- GPT's GELU is the exact (erf) one, GPT-2's `activation_function: gelu`. GPT-2's own default `gelu_new` is the
  tanh approximation: such a model imports with each block's GELU swapped for `nn.GELU(approximate="tanh")`,
  and a GPT so swapped exports as `gelu_new` again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from tokenizers import Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer
from transformers import (
    AutoConfig,
    GenerationConfig,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from lightning_llm.errors import UserError
from lightning_llm.models.gpt import GPT, GPTConfig
from lightning_llm.models.gpt_classifier import GPTClassifier
from lightning_llm.tokenizers import END_OF_TEXT, BPETokenizer, CharTokenizer, Tokenizer

LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # GPT-2 keeps these transposed (Conv1D)
NORMS = ("ln_1", "ln_2")
# GPT-2's activation name for each nn.GELU `approximate` setting.
GPT2_ACTIVATION = {"none": "gelu", "tanh": "gelu_new"}
# GPT-2 activations a GPT computes exactly: erf GELU, or the tanh approximation (the same formula by two names).
GELU_APPROXIMATION = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
# The character tokenizer as a `tokenizers` one: every character its own piece, pieces joined without spaces.
CHARACTER_PIECES = r"[\s\S]"
CHAR_PAD = "<pad>"
NO_UNKNOWN = (
    "<unk>"  # never in a character vocabulary: an unknown character fails to encode, as in the project
)


def _names(n_layer: int) -> Iterator[tuple[str, bool]]:
    """(name under `transformer.`, stored transposed by GPT-2) for every tensor GPT-2's transformer holds."""
    yield from (("wte.weight", False), ("wpe.weight", False), ("ln_f.weight", False), ("ln_f.bias", False))
    for i in range(n_layer):
        for norm in NORMS:
            yield from ((f"h.{i}.{norm}.weight", False), (f"h.{i}.{norm}.bias", False))
        for linear in LINEARS:
            yield from ((f"h.{i}.{linear}.weight", True), (f"h.{i}.{linear}.bias", False))


def _gpt2_weights(transformer: nn.ModuleDict, n_layer: int) -> dict[str, torch.Tensor]:
    """The transformer's tensors under GPT-2's names and layout; a GPT without biases gets zero ones."""
    own = transformer.state_dict()
    weights = {}
    for name, transposed in _names(n_layer):
        tensor = own.get(name)
        if tensor is None:  # bias=False: GPT-2 always adds a bias, so add zero
            width = transformer.get_submodule(name.rpartition(".")[0]).weight.size(0)
            tensor = own["wpe.weight"].new_zeros(width)
        weights[f"transformer.{name}"] = tensor.t() if transposed else tensor
    return weights


def _activation(blocks: nn.ModuleList) -> str:
    """GPT-2's name for the GELU every block uses (they must agree)."""
    settings = {getattr(block.mlp.gelu, "approximate", None) for block in blocks}
    if len(settings) != 1 or not settings <= GPT2_ACTIVATION.keys():
        raise UserError(
            f"the GPT's blocks use the activations {sorted(map(str, settings))}: GPT-2 has one GELU for all "
            "blocks, exact ('none') or tanh; export a GPT with one of those"
        )
    return GPT2_ACTIVATION[settings.pop()]


def _gpt2_config(config: GPTConfig, transformer: nn.ModuleDict, **settings) -> GPT2Config:
    """GPT-2's config for a GPT's shape; the special-token ids are None until a tokenizer names them."""
    shape = {
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": 4 * config.n_embd,
        "activation_function": _activation(transformer.h),
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": transformer.ln_f.eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": True,
        "bos_token_id": None,  # GPT2Config's default is GPT-2's own 50256
        "eos_token_id": None,
        "pad_token_id": None,
    }
    return GPT2Config(**(shape | settings))


def _built_like(model: PreTrainedModel, reference: torch.Tensor, training: bool) -> PreTrainedModel:
    return model.to(device=reference.device, dtype=reference.dtype).train(training)


def to_gpt2(gpt: GPT) -> GPT2LMHeadModel:
    """The same network as a `transformers` GPT2LMHeadModel (a copy: same logits, same device and dtype)."""
    if not isinstance(gpt, GPT):
        raise UserError(
            f"a {type(gpt).__name__} is not GPT-2 shaped: only lightning_llm.models.GPT converts to GPT-2; "
            "pretrain with a GPT config (e.g. configs/gpt-shakespeare-char.yaml) to export"
        )
    model = GPT2LMHeadModel(_gpt2_config(gpt.config, gpt.transformer))
    weights = _gpt2_weights(gpt.transformer, gpt.config.n_layer)
    weights["lm_head.weight"] = weights["transformer.wte.weight"]  # tied, as in the GPT
    model.load_state_dict(weights, strict=True)
    return _built_like(model, gpt.transformer.wte.weight, gpt.training)


def to_gpt2_classifier(backbone: GPTClassifier, label_names: Sequence[str]) -> GPT2ForSequenceClassification:
    """A GPT classifier as `GPT2ForSequenceClassification`: the same logits for right-padded inputs.

    GPT-2's `score` has no bias; the head's bias b is folded into `ln_f`'s bias, the hidden state the head reads:
    W (h + d) = W h + b for d = pinv(W) b, exact when W's rows are independent (up to float rounding). The
    exported transformer's last hidden state carries that shift d too; the logits are the project's."""
    if backbone.pooling != "last":
        raise UserError(
            f"a GPT classifier with pooling {backbone.pooling!r} cannot be exported: GPT2ForSequenceClassification "
            "reads the last token only; fine-tune with model.init_args.backbone.init_args.pooling last"
        )
    if len(label_names) != backbone.num_labels:
        raise UserError(
            f"label names {list(label_names)} must have one name per output ({backbone.num_labels})"
        )
    config = backbone.config
    pad_id, vocab_size = backbone.pad_token_id, config.vocab_size
    if isinstance(backbone.tokenizer.text_tokenizer, CharTokenizer):
        # GPT-2 finds each row's end as its last token that is not padding: padding with a real character would
        # end a text that ends in that character early, so characters pad with a token of their own (a zero row)
        pad_id = backbone.tokenizer.text_tokenizer.vocab_size
        vocab_size = max(vocab_size, pad_id + 1)
    gpt2_config = _gpt2_config(
        config,
        backbone.transformer,
        vocab_size=vocab_size,
        pad_token_id=pad_id,
        num_labels=backbone.num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
        # the pipeline then applies softmax (or nothing, for regression), as `predict` does
        problem_type="regression" if backbone.num_labels == 1 else "single_label_classification",
    )
    model = GPT2ForSequenceClassification(gpt2_config)
    weights = _gpt2_weights(backbone.transformer, config.n_layer)
    wte = weights["transformer.wte.weight"]  # (vocab, C)
    weights["transformer.wte.weight"] = torch.cat([wte, wte.new_zeros(vocab_size - wte.size(0), wte.size(1))])
    weights["transformer.ln_f.bias"] = weights["transformer.ln_f.bias"] + _folded_bias(backbone.head)
    weights["score.weight"] = backbone.head.weight.detach()
    model.load_state_dict(weights, strict=True)
    return _built_like(model, wte, backbone.training)


def _folded_bias(head: nn.Linear) -> torch.Tensor:
    """d (C,) with head.weight @ d == head.bias, or a UserError when no d gives it exactly."""
    weight, bias = head.weight.detach().double(), head.bias.detach().double()  # (L, C), (L,)
    if not bias.any():
        return torch.zeros_like(head.weight[0]).detach()
    shift = torch.linalg.pinv(weight) @ bias  # (C,)
    miss = float((weight @ shift - bias).abs().max())
    # a large shift drowns the hidden state's low bits: bound what rounding h + d then costs the logits
    rounding = float(weight.abs().sum(1).max() * shift.abs().max()) * torch.finfo(head.weight.dtype).eps
    off = max(miss, rounding)
    if off > 1e-5 * max(1.0, float(bias.abs().max())):
        raise UserError(
            "the classifier head's bias cannot be exported exactly: GPT-2's score layer has no bias, and folded "
            f"into the last LayerNorm's bias it would be off by up to {off:.2g} (the head's weight rows are "
            "linearly dependent, or nearly); no exact GPT-2 export exists for this checkpoint"
        )
    return shift.to(head.weight.dtype)


def from_gpt2(source: str | Path | GPT2LMHeadModel) -> GPT:
    """A GPT with the weights of a GPT2LMHeadModel or a folder holding one (in eval mode, as transformers
    loads). GPT-2's default `gelu_new` becomes a tanh-approximate nn.GELU in every block."""
    model = _load_gpt2(source) if isinstance(source, str | Path) else source
    if not isinstance(model, GPT2LMHeadModel):
        raise UserError(f"a {type(model).__name__} is not a GPT2LMHeadModel: pass a GPT-2 language model")
    config: GPT2Config = model.config
    _check_importable(config, model)
    gpt = GPT(
        vocab_size=config.vocab_size,
        block_size=config.n_positions,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        dropout=config.resid_pdrop,  # one rate for all dropout here: GPT-2's residual one
        bias=True,
        init_std=config.initializer_range,
    )
    for block in gpt.transformer.h:
        block.mlp.gelu = nn.GELU(approximate=GELU_APPROXIMATION[config.activation_function])
    theirs = model.state_dict()
    weights = {}
    for name, transposed in _names(config.n_layer):
        tensor = theirs[f"transformer.{name}"]
        weights[f"transformer.{name}"] = tensor.t() if transposed else tensor
    weights["lm_head.weight"] = weights["transformer.wte.weight"]
    gpt.load_state_dict(weights, strict=True)
    return gpt.to(device=model.transformer.wte.weight.device, dtype=model.transformer.wte.weight.dtype).eval()


def _load_gpt2(folder: str | Path) -> GPT2LMHeadModel:
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face model folder (no config.json); pass a GPT-2 folder")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type != "gpt2":
            raise UserError(f"{path} holds a {config.model_type!r} model, not GPT-2; pass a GPT-2 folder")
        architectures = config.architectures or ["GPT2LMHeadModel"]
        if "GPT2LMHeadModel" not in architectures:
            raise UserError(
                f"{path} holds a {architectures[0]}, not a GPT2LMHeadModel: import a GPT-2 language model"
            )
        return GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        if isinstance(error, UserError):
            raise
        reason = " ".join(str(error).split())[:300]
        raise UserError(
            f"{path} cannot be loaded as GPT-2 ({reason}); pass a folder written by save_pretrained"
        ) from None


def _check_importable(config: GPT2Config, model: GPT2LMHeadModel) -> None:
    """A UserError naming the first GPT-2 setting a GPT does not compute the same way."""
    checks = [  # (setting, its value, whether a GPT computes it, what a GPT needs)
        ("activation_function", config.activation_function, config.activation_function in GELU_APPROXIMATION,
         " or ".join(GELU_APPROXIMATION)),
        ("n_inner", config.n_inner, config.n_inner in (None, 4 * config.n_embd), "null (4 x n_embd)"),
        ("layer_norm_epsilon", config.layer_norm_epsilon, config.layer_norm_epsilon == 1e-5, "1e-05"),
        ("scale_attn_weights", config.scale_attn_weights, config.scale_attn_weights, "true"),
        ("scale_attn_by_inverse_layer_idx", config.scale_attn_by_inverse_layer_idx,
         not config.scale_attn_by_inverse_layer_idx, "false"),
        ("add_cross_attention", config.add_cross_attention, not config.add_cross_attention, "false"),
    ]  # fmt: skip
    for key, value, computed, needed in checks:
        if not computed:
            raise UserError(
                f"this GPT-2 has {key} {value!r}, which the project's GPT does not compute (it needs {needed}); "
                "it cannot be imported"
            )
    head, wte = model.lm_head.weight, model.transformer.wte.weight
    if head is not wte and not torch.equal(head, wte):
        raise UserError(
            "this GPT-2's lm_head is not tied to its token embedding (wte) as a GPT's is; it cannot be imported"
        )


def gpt2_tokenizer(
    tokenizer: Tokenizer, model_max_length: int, pad: bool = False, pair_separator: str | None = None
) -> PreTrainedTokenizerFast:
    """The project's tokenizer as a `transformers` one with the same ids and decoding.

    BPE keeps its `tokenizers` JSON, with `<|endoftext|>` as GPT-2's bos, eos, unk and pad token. Characters
    become one WordLevel token each; a character outside the vocabulary fails to encode, as here. With `pad`,
    characters get a padding token of their own after the last character's id (see `to_gpt2_classifier`).
    With `pair_separator`, a text pair encodes as the classifier's does: first, separator, second."""
    # no clean-up of spaces around punctuation on decoding: the text comes back as it was
    common = {"model_max_length": model_max_length, "clean_up_tokenization_spaces": False}
    if isinstance(tokenizer, BPETokenizer):
        backend = HFTokenizer.from_str(tokenizer.to_json())
        _join_pairs(backend, tokenizer, pair_separator)
        if backend.token_to_id(END_OF_TEXT) is None:
            return PreTrainedTokenizerFast(tokenizer_object=backend, **common)
        specials = dict.fromkeys(("bos_token", "eos_token", "unk_token", "pad_token"), END_OF_TEXT)
        return PreTrainedTokenizerFast(tokenizer_object=backend, **specials, **common)
    if isinstance(tokenizer, CharTokenizer):
        vocab = {char: index for index, char in enumerate(tokenizer.chars)}
        pad_token = None
        if (
            pad
        ):  # a text the project can encode never holds it: one of its characters is not in the vocabulary
            pad_token = CHAR_PAD if not set(CHAR_PAD) <= vocab.keys() else _unused_character(vocab)
            vocab[pad_token] = len(vocab)
        backend = HFTokenizer(models.WordLevel(vocab, unk_token=NO_UNKNOWN))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(CHARACTER_PIECES), behavior="isolated")
        backend.decoder = decoders.Fuse()
        _join_pairs(backend, tokenizer, pair_separator)
        return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=pad_token, **common)
    raise UserError(f"a {type(tokenizer).__name__} cannot be exported: only the char and BPE tokenizers can")


def _join_pairs(backend: HFTokenizer, tokenizer: Tokenizer, separator: str | None) -> None:
    """A pair becomes first + separator + second, the separator's ids as the project encodes it; a single
    text stays as it is. Truncation of a pair then keeps room for the separator, as the classifier does."""
    if separator is None:
        return
    ids = tokenizer.encode(separator)
    pieces = [tokenizer.decode([token_id]) for token_id in ids]
    special = [{"id": "separator", "ids": ids, "tokens": pieces}]
    backend.post_processor = processors.TemplateProcessing(
        single="$A", pair="$A:0 separator:0 $B:1", special_tokens=special
    )


def _unused_character(vocab: dict[str, int]) -> str:
    return next(chr(code) for code in range(0xE000, 0xF8FF) if chr(code) not in vocab)  # private use area


def save_gpt2(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    """Write model and tokenizer as one folder, with the tokenizer's special-token ids in the model's config
    and, for a language model, a generation config that stops at `<|endoftext|>` (BPE)."""
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if isinstance(model, GPT2ForSequenceClassification) and model.config.pad_token_id != ids["pad_token_id"]:
        raise ValueError(
            f"the tokenizer pads with {ids['pad_token_id']}, the model with {model.config.pad_token_id}"
        )
    for key, value in ids.items():
        setattr(model.config, key, value)
    if isinstance(model, GPT2LMHeadModel):
        model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def project_tokenizer(folder: str | Path) -> Tokenizer:
    """The project's tokenizer back from a folder this module exported (`tokenizer.json`)."""
    path = Path(folder).expanduser() / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist: pass a folder written by `lightning-llm export`")
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["padding"] = spec["truncation"] = None  # settings of the transformers wrapper, not of the vocabulary
    model = spec.get("model") or {}
    if model.get("type") == "BPE":
        return BPETokenizer.from_json(json.dumps(spec))
    added = {token["content"] for token in spec.get("added_tokens", [])}
    chars = [token for token, _ in sorted(model.get("vocab", {}).items(), key=lambda item: item[1])]
    chars = [token for token in chars if token not in added]
    single = all(len(token) == 1 for token in chars)
    character_split = HFTokenizer(models.WordLevel({}, unk_token=NO_UNKNOWN))
    character_split.pre_tokenizer = pre_tokenizers.Split(Regex(CHARACTER_PIECES), behavior="isolated")
    same_split = spec.get("pre_tokenizer") == json.loads(character_split.to_str())["pre_tokenizer"]
    if (
        model.get("type") != "WordLevel"
        or not same_split
        or not single
        or chars != CharTokenizer(chars).chars
    ):
        raise UserError(f"{path} is not a tokenizer `lightning-llm export` writes: pass such a folder")
    return CharTokenizer(chars)
