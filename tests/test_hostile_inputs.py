"""Bad inputs to the real command line, one table: each ends with exit status 2, one `error:` line naming the
thing and the fix, no traceback, and no file that existed before changed (checkpoints, cache, corpus).

Every case runs against one workspace holding a trained tiny GPT; a new option brings its bad values here.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
from bert_fixtures import write_sst_like
from cli_runner import changed_files, error_line, run_cli, run_cli_cases, snapshot
from lm_helpers import BPE_TINY, SHAKESPEARE_CONFIG, tiny_lm_overrides, write_tiny_corpus

REPO = Path(__file__).resolve().parents[1]
MINILM_CONFIG = REPO / "configs" / "minilm-sst2.yaml"
GPT_FINETUNE_CONFIG = REPO / "configs" / "gpt-sst2-finetune.yaml"
LAST = "logs/gpt-shakespeare-char/trained/checkpoints/last.ckpt"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def lm_fit(*extra: str, corpus: str = "corpus.txt") -> list[str]:
    return ["fit", "--config", str(SHAKESPEARE_CONFIG), *tiny_lm_overrides(Path(corpus)), *QUIET, *extra]


def gpt_finetune(*extra: str, backbone: str = LAST) -> list[str]:
    """Fine-tune the workspace's tiny GPT (block size 16) on its SST-2-like folder."""
    args = ["fit", "--config", str(GPT_FINETUNE_CONFIG), "--data.data_dir", "sst", "--data.max_length", "16"]
    return [*args, "--model.init_args.backbone.init_args.checkpoint", backbone, *QUIET, *extra]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with a corpus, a 2-step GPT checkpoint (BPE) and the broken files the cases hand over."""
    root = tmp_path_factory.mktemp("hostile")
    write_tiny_corpus(root / "corpus.txt")
    write_sst_like(root / "sst")
    dev_with_empty_text = write_sst_like(root / "sst-empty-text") / "dev.tsv"
    dev_with_empty_text.write_text(dev_with_empty_text.read_text() + "\t1\n")  # line 14: no sentence
    trained = run_cli(
        lm_fit("--trainer.max_steps", "2", "--trainer.val_check_interval", "2", *BPE_TINY)
        + ["--trainer.logger.init_args.version", "trained"],
        root,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    last = root / LAST
    (root / "truncated.ckpt").write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (root / "notes.ckpt").write_text("not a checkpoint\n")
    (root / "plain-folder").mkdir()
    (root / "a-file").write_text("a file where a folder belongs\n")
    # another module's checkpoint: a classifier's hyperparameters, handed to the language model
    torch.save(
        {
            "hyper_parameters": {"_class_path": "lightning_llm.lit.classifier.SequenceClassifier"},
            "state_dict": {},
        },
        root / "classifier.ckpt",
    )
    # checkpoints that are files of the right kind but not Lightning checkpoints, and one that would run code
    torch.save([1, 2, 3], root / "list.ckpt")
    torch.save({"epoch": 1}, root / "no-weights.ckpt")
    torch.save({"state_dict": torch.load(last, weights_only=True)["state_dict"]}, root / "no-hparams.ckpt")
    torch.save({"state_dict": {}, "payload": RunsCode()}, root / "runs-code.ckpt")
    saved = torch.load(last, weights_only=True)
    saved["hyper_parameters"]["model"]["class_path"] = "this.Nope"  # importing `this` prints: code would run
    torch.save(saved, root / "foreign-class.ckpt")
    for name, edit_checkpoint in CHECKPOINT_EDITS.items():  # a good checkpoint with one field broken
        broken = torch.load(last, weights_only=True)
        edit_checkpoint(broken)
        torch.save(broken, root / f"{name}.ckpt")
    (root / "trainer-is-a-number.yaml").write_text("trainer: 5\n")
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]  # 9^6 values from six short lines
    levels += [f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcde", "bcdef", strict=True)]
    (root / "alias-bomb.yaml").write_text("\n".join([*levels, "trainer: {plugins: *f}"]) + "\n")
    (root / "key-twice.yaml").write_text("trainer:\n  max_steps: 3\n  max_steps: 9\n")
    (root / "config-only-model").mkdir()
    (root / "config-only-model" / "config.json").write_text('{"model_type": "bert"}')
    (root / "broken.yaml").write_text("trainer: [1,\n  2\nmodel: {")
    (root / "list.yaml").write_text("- fit\n- model\n")
    (root / "empty.yaml").write_text("")
    (root / "lowercase.txt").write_text((root / "corpus.txt").read_text().lower())
    # the same corpus edited: BPE trains another tokenizer of the same size on it
    edited = (root / "corpus.txt").read_text().replace("fox", "cat").replace("dog", "owl")
    (root / "edited.txt").write_text(edited)
    (root / "spaces").mkdir()
    for name, text in SPACES.items():
        (root / "spaces" / name).write_text(text)
    # a study started with other settings: continuing it with these would mix two searches
    other = root / "logs" / "tune" / "other-settings"
    other.mkdir(parents=True)
    optuna.create_study(study_name="other-settings", storage=f"sqlite:///{other / 'study.db'}").set_user_attr(
        "settings", "another search"
    )
    return root


def _weights(transform):
    def edit(checkpoint: dict) -> None:
        checkpoint["state_dict"] = {name: transform(t) for name, t in checkpoint["state_dict"].items()}

    return edit


CHECKPOINT_EDITS = {
    "garbage-tokenizer": lambda checkpoint: checkpoint.update(tokenizer="{not json"),
    "nan-weights": _weights(lambda tensor: torch.full_like(tensor, float("nan"))),
    "integer-weights": _weights(lambda tensor: tensor.long()),
    "negative-layers": lambda checkpoint: checkpoint["hyper_parameters"]["model"]["init_args"].update(
        n_layer=-1
    ),
    "extra-weight": lambda checkpoint: checkpoint["state_dict"].update({"bogus.extra": torch.zeros(1)}),
    "short-tokenizer": lambda checkpoint: checkpoint.update(tokenizer='{"type": "char", "chars": "ab"}'),
    "unknown-setting": lambda checkpoint: checkpoint["hyper_parameters"].update(not_a_setting=1),
    # written before a rename: the network's settings hold the old name of a key
    "renamed-network-setting": lambda checkpoint: checkpoint["hyper_parameters"]["model"]["init_args"].update(
        max_len=checkpoint["hyper_parameters"]["model"]["init_args"].pop("block_size")
    ),
    # a network that is not GPT-2 shaped: export refuses it by its class, before reading its settings
    "transformer-lm-network": lambda checkpoint: checkpoint["hyper_parameters"]["model"].update(
        class_path="lightning_llm.models.TransformerLM"
    ),
}


class RunsCode:
    """A pickled object that would create a file when unpickled: no reader of ours may let it."""

    def __reduce__(self):
        return (Path.touch, (Path("PWNED"),))


@dataclass(frozen=True)
class BadInput:
    name: str
    args: Callable[[], list[str]]
    says: tuple[str, ...]  # fragments the error line must hold: the thing, and the fix


def generate_from(checkpoint: str) -> list[str]:
    return ["generate", "--ckpt_path", checkpoint, "--max_new_tokens", "4"]


def generate(*extra: str) -> list[str]:
    return ["generate", "--ckpt_path", LAST, "--max_new_tokens", "4", *extra]


BPE = BPE_TINY


def tune(space: str, *extra: str) -> list[str]:
    return ["tune", *lm_fit(*BPE)[1:], "--search", f"spaces/{space}", *extra]


LR_SPACE = "  model.init_args.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3}\n"
SPACES = {  # search-space files for tune's rows
    "good.yaml": "parameters:\n" + LR_SPACE,
    "misspelt.yaml": "parameters:\n  model.init_args.learning_rat: {type: float, low: 1.0e-4, high: 1.0e-3}\n",
    "low-above-high.yaml": "parameters:\n  model.init_args.learning_rate: {type: float, low: 0.01, high: 0.001}\n",
    "unlogged-metric.yaml": "metric: val/acc\ndirection: maximize\nparameters:\n" + LR_SPACE,
    "beta-5.yaml": "parameters:\n  model.init_args.betas.5: {type: float, low: 0.9, high: 0.99}\n",
    "text-for-a-number.yaml": "parameters:\n  model.init_args.learning_rate: {type: categorical, choices: [fast, slow]}\n",
    "during-search-typo.yaml": "during_search: {trainer.max_step: 5}\nparameters:\n" + LR_SPACE,
}
CASES = [
    # checkpoints handed to the wrong command, or not checkpoints at all
    BadInput("truncated-ckpt-to-fit", lambda: lm_fit("--ckpt_path", "truncated.ckpt"), ("truncated.ckpt", "corrupt")),
    BadInput("text-file-as-ckpt", lambda: lm_fit("--ckpt_path", "notes.ckpt"), ("notes.ckpt", "corrupt")),
    BadInput("ckpt-best-from-the-cli", lambda: lm_fit("--ckpt_path", "best"), ("--ckpt_path best", "last")),
    BadInput("device-as-ckpt", lambda: lm_fit("--ckpt_path", "/dev/null"), ("/dev/null", "not a regular file")),
    BadInput("missing-ckpt", lambda: lm_fit("--ckpt_path", "nowhere.ckpt"), ("nowhere.ckpt", "does not exist")),
    BadInput("folder-to-generate", lambda: ["generate", "--ckpt_path", "plain-folder"], ("plain-folder", "consolidate")),
    BadInput("plain-folder-to-fit", lambda: lm_fit("--ckpt_path", "plain-folder"), ("plain-folder",)),
    BadInput(
        "classifier-ckpt-to-lm-fit",
        lambda: lm_fit("--ckpt_path", "classifier.ckpt", *BPE),
        ("SequenceClassifier", "LanguageModel", "checkpoint written with this config"),
    ),
    BadInput(
        "lm-ckpt-to-classifier-predict",
        lambda: ["predict", "--config", str(MINILM_CONFIG), "--ckpt_path", LAST],
        ("holds a LanguageModel", "SequenceClassifier"),
    ),
    BadInput("list-as-ckpt", lambda: ["generate", "--ckpt_path", "list.ckpt"], ("list.ckpt", "not a Lightning checkpoint")),
    BadInput("ckpt-without-weights", lambda: lm_fit("--ckpt_path", "no-weights.ckpt"), ("no state_dict",)),
    BadInput("ckpt-without-hparams", lambda: ["generate", "--ckpt_path", "no-hparams.ckpt"], ("no hyperparameters",)),
    BadInput("ckpt-that-runs-code", lambda: ["generate", "--ckpt_path", "runs-code.ckpt"], ("could run code",)),
    BadInput(
        "ckpt-naming-a-foreign-class-to-generate",
        lambda: ["generate", "--ckpt_path", "foreign-class.ckpt"],
        ("'this.Nope'", "not this project's"),
    ),
    BadInput(
        "ckpt-naming-a-foreign-class-to-validate",
        lambda: ["validate", *lm_fit(*BPE)[1:], "--ckpt_path", "foreign-class.ckpt"],
        ("'this.Nope'", "could run code"),
    ),
    BadInput(
        "pretrained-folder-without-weights",
        lambda: ["fit", "--config", str(MINILM_CONFIG), "--model.init_args.backbone.init_args.pretrained", "config-only-model"],
        ("backbone.pretrained 'config-only-model' cannot be loaded", "save_pretrained"),
    ),
    BadInput(
        "encoder-dropout-above-one",
        lambda: ["fit", "--config", str(MINILM_CONFIG), "--model.init_args.backbone.init_args.encoder_dropout", "1.5"],
        ("encoder_dropout is 1.5", "[0, 1)"),
    ),
    BadInput(
        "ddp-batch-larger-than-each-process-share",  # each of 2 processes takes 40 of the 72 texts per step
        lambda: gpt_finetune("--data.batch_size", "40", "--trainer.devices", "2", "--trainer.strategy", "ddp"),
        ("data.batch_size 40 x 2 processes", "72 training texts", "fewer processes"),
    ),
    BadInput("garbage-tokenizer-in-ckpt", lambda: generate_from("garbage-tokenizer.ckpt"), ("saved tokenizer",)),
    BadInput("nan-weights-to-generate", lambda: generate_from("nan-weights.ckpt"), ("NaN or infinite weights",)),
    BadInput(
        "nan-weights-to-validate",
        lambda: ["validate", *lm_fit(*BPE)[1:], "--ckpt_path", "nan-weights.ckpt"],
        ("NaN or infinite weights", "earlier checkpoint"),
    ),
    BadInput(
        "garbage-tokenizer-to-validate",
        lambda: ["validate", *lm_fit(*BPE)[1:], "--ckpt_path", "garbage-tokenizer.ckpt"],
        ("saved tokenizer",),
    ),
    BadInput("extra-weight", lambda: generate_from("extra-weight.ckpt"), ("bogus.extra",)),
    BadInput("tokenizer-of-another-model", lambda: generate_from("short-tokenizer.ckpt"), ("2 tokens",)),
    BadInput(
        "ckpt-with-an-unknown-setting",
        lambda: ["validate", *lm_fit(*BPE)[1:], "--ckpt_path", "unknown-setting.ckpt"],
        ("unknown-setting.ckpt holds settings LanguageModel does not take: not_a_setting", "learning_rate"),
    ),
    BadInput(
        "renamed-setting-in-ckpt",
        lambda: generate_from("renamed-network-setting.ckpt"),
        ("GPT does not take: max_len", "block_size", "another version"),
    ),
    BadInput("integer-weights", lambda: generate_from("integer-weights.ckpt"), ("torch.int64",)),
    BadInput("settings-that-do-not-build", lambda: generate_from("negative-layers.ckpt"), ("n_layer is -1",)),
    BadInput("predict-with-a-language-model", lambda: ["predict", *lm_fit(*BPE)[1:]], ("generate",)),
    BadInput(
        "new-run-into-a-used-log-folder",
        lambda: lm_fit(*BPE, "--trainer.logger.init_args.version", "trained"),
        ("holds another run's checkpoints", "--ckpt_path last"),
    ),
    BadInput("last-without-a-logger", lambda: lm_fit("--trainer.logger", "false", "--ckpt_path", "last"), ("trainer.logger is off",)),
    # settings the checkpoint would silently replace, and a tokenizer that no longer matches
    BadInput(
        "typed-flag-the-checkpoint-overrides",
        lambda: lm_fit("--ckpt_path", LAST, *BPE, "--model.init_args.learning_rate", "0.5"),
        ("model.init_args.learning_rate=0.001", "you set 0.5", "without --ckpt_path"),
    ),
    BadInput(
        "resume-on-an-edited-corpus",
        lambda: lm_fit("--ckpt_path", LAST, *BPE, "--trainer.max_steps", "4", corpus="edited.txt"),
        ("another tokenizer", "fingerprint", "the corpus and data.tokenizer it was trained with"),
    ),
    # values out of range
    BadInput("learning-rate-zero", lambda: lm_fit("--model.init_args.learning_rate", "0"), ("model.learning_rate",)),
    BadInput("learning-rate-negative", lambda: lm_fit("--model.init_args.learning_rate", "-1"), ("learning_rate",)),
    BadInput("beta-above-one", lambda: lm_fit("--model.init_args.betas", "[0.9, 1.5]"), ("model.betas", "[0, 1)")),
    BadInput("min-lr-above-peak", lambda: lm_fit("--model.init_args.min_lr", "1.0"), ("model.min_lr",)),
    BadInput(
        "heads-that-do-not-divide-the-width",
        lambda: lm_fit("--model.init_args.model.init_args.n_head", "3"),
        ("n_embd (16)", "n_head (3)"),
    ),
    BadInput("dropout-one", lambda: lm_fit("--model.init_args.model.init_args.dropout", "1.0"), ("dropout",)),
    BadInput("block-size-zero", lambda: lm_fit("--data.block_size", "0"), ("data.block_size",)),
    BadInput("a-device-this-machine-lacks", lambda: lm_fit("--trainer.accelerator", "gpu"), ("trainer.accelerator",)),
    BadInput("no-devices", lambda: lm_fit("--trainer.devices", "-3"), ("trainer.devices",)),
    BadInput("unknown-strategy", lambda: lm_fit("--trainer.strategy", "nonsense"), ("nonsense",)),
    BadInput("seed-out-of-range", lambda: lm_fit("--seed_everything", "99999999999999999999"), ("seed_everything",)),
    BadInput("same-file-twice", lambda: lm_fit("--data.path", "[corpus.txt, corpus.txt]"), ("more than once",)),
    BadInput("negative-workers", lambda: lm_fit("--data.num_workers", "-1"), ("data.num_workers",)),
    BadInput("bpe-smaller-than-bytes", lambda: lm_fit(*BPE, "--data.bpe_vocab_size", "1"), ("data.bpe_vocab_size", "257")),
    BadInput("bpe-size-for-a-char-tokenizer", lambda: lm_fit("--data.bpe_vocab_size", "8000"), ("data.bpe_vocab_size is 8000", "data.tokenizer is char", "--data.tokenizer bpe")),
    BadInput("prepare-bpe-size-for-char", lambda: ["prepare", "--data.path", "corpus.txt", "--data.bpe_vocab_size", "512", "--output_dir", "p"], ("data.bpe_vocab_size is 512", "unset")),
    BadInput("no-accumulation", lambda: lm_fit("--trainer.accumulate_grad_batches", "0"), ("trainer.accumulate_grad_batches",)),
    BadInput("validation-every-zero", lambda: lm_fit("--trainer.val_check_interval", "0"), ("trainer.val_check_interval",)),
    BadInput("negative-clipping", lambda: lm_fit("--trainer.gradient_clip_val", "-1"), ("trainer.gradient_clip_val",)),
    BadInput(
        "typed-value-the-data-links",
        lambda: lm_fit("--model.init_args.model.init_args.block_size", "64"),
        ("model.init_args.model.init_args.block_size", "--data.block_size"),
    ),
    BadInput(
        "prompt-the-corpus-cannot-encode",
        lambda: lm_fit("--trainer.max_steps", "2", corpus="lowercase.txt"),
        ("TextSamples", "prompt", "trainer.callbacks"),
    ),
    # config files
    BadInput("yaml-syntax-error", lambda: ["fit", "--config", "broken.yaml"], ("broken.yaml line 3", "fix the YAML")),
    BadInput("yaml-list", lambda: ["fit", "--config", "list.yaml"], ("list.yaml", "not a mapping")),
    BadInput("yaml-empty", lambda: ["fit", "--config", "empty.yaml"], ("empty.yaml", "holds nothing")),
    BadInput("config-is-a-folder", lambda: ["fit", "--config", "plain-folder"], ("plain-folder", "is a folder")),
    BadInput("trainer-not-a-mapping", lambda: lm_fit("--config", "trainer-is-a-number.yaml"), ("trainer is 5",)),
    BadInput("yaml-alias-bomb", lambda: ["fit", "--config", "alias-bomb.yaml"], ("expands to more than",)),
    BadInput("negative-min-steps", lambda: lm_fit("--trainer.min_steps", "-3"), ("trainer.min_steps",)),
    BadInput("yaml-key-twice", lambda: ["fit", "--config", "key-twice.yaml"], ("'max_steps' is given twice",)),
    BadInput("not-a-command", lambda: ["train", "--config", "key-twice.yaml"], ("'train' is not a command",)),
    BadInput("config-missing", lambda: ["fit", "--config", "nowhere.yaml"], ("nowhere.yaml", "does not exist")),
    # data paths that are not text files: a device would never end
    BadInput("device-as-corpus", lambda: lm_fit(corpus="/dev/zero"), ("/dev/zero", "not a regular file")),
    # the parser's own complaints keep their reason
    BadInput("not-a-number", lambda: lm_fit("--trainer.max_steps", "abc"), ("trainer.max_steps", "int", "abc")),
    BadInput(
        "unknown-class-path",
        lambda: lm_fit("--model.init_args.model.class_path", "lightning_llm.models.Nope"),
        ("lightning_llm.models.Nope", "no attribute 'Nope'"),
    ),
    # generate's sampling options
    BadInput("negative-new-tokens", lambda: generate("--max_new_tokens", "-5"), ("--max_new_tokens", "-5")),
    BadInput("no-samples", lambda: generate("--num_samples", "0"), ("--num_samples",)),
    BadInput("top-p-above-one", lambda: generate("--top_p", "1.5"), ("--top_p", "(0, 1]")),
    BadInput("negative-temperature", lambda: generate("--temperature", "-1"), ("--temperature",)),
    BadInput("new-tokens-for-days", lambda: generate("--max_new_tokens", "100000000000"), ("--max_new_tokens",)),
    BadInput("top-k-zero", lambda: generate("--top_k", "0"), ("--top_k",)),
    BadInput("generate-on-a-missing-gpu", lambda: generate("--device", "cuda"), ("--device", "cpu")),
    BadInput("generate-on-no-device", lambda: generate("--device", "toaster"), ("toaster",)),
    # file-system faults: a file where a folder belongs, for every folder the run writes
    BadInput("log-folder-is-a-file", lambda: lm_fit("--trainer.logger.init_args.save_dir", "a-file"), ("a-file",)),
    BadInput("cache-folder-is-a-file", lambda: lm_fit("--data.cache_dir", "a-file/cache"), ("a-file",)),
    BadInput("log-folder-cannot-exist", lambda: lm_fit("--trainer.logger.init_args.save_dir", "/proc/nope/logs"), ("/proc/nope",)),
    # fine-tuning the GPT: its checkpoint, LoRA, lengths, sources; exporting the result
    BadInput("gpt-backbone-missing", lambda: gpt_finetune(backbone="nowhere.ckpt"), ("nowhere.ckpt", "does not exist")),
    BadInput(
        "gpt-backbone-is-a-classifier",
        lambda: gpt_finetune(backbone="classifier.ckpt"),
        ("classifier.ckpt", "SequenceClassifier", "written by `lightning-llm fit` with a GPT"),
    ),
    BadInput(
        "lora-target-matches-nothing",
        lambda: gpt_finetune("--model.init_args.lora", "{target_modules: [qkv]}"),
        ("'qkv' matches no linear layer", "c_attn"),
    ),
    BadInput("lora-rank-zero", lambda: gpt_finetune("--model.init_args.lora", "{r: 0}"), ("lora.r is 0",)),
    BadInput("lora-and-freeze", lambda: gpt_finetune("--model.init_args.lora", "{}", "--model.init_args.freeze", "backbone"), ("leave model.freeze at none",)),
    BadInput(
        "max-length-beyond-block-size",
        lambda: gpt_finetune("--data.max_length", "64"),
        ("data.max_length is 64", "at most 16 tokens", "--data.max_length 16"),
    ),
    BadInput("empty-text-for-gpt", lambda: gpt_finetune("--data.data_dir", "sst-empty-text"), ("sst-empty-text/dev.tsv line 14", "is empty")),
    BadInput("lr-ratio-without-unfreeze", lambda: gpt_finetune("--model.init_args.backbone_lr_ratio", "0.5"), ("backbone_lr_ratio", "unfreeze_at_epoch")),
    BadInput("renamed-data-key", lambda: lm_fit("--data.hf_dataset", "wikitext"), ("hf_dataset", "data.path hub:")),
    BadInput("checkpoint-monitor-under-regression", lambda: gpt_finetune("--data.task", "regression", "--data.labels", "null"), ("ModelCheckpoint monitors val/acc", "val/mse")),
    BadInput("early-stop-on-unlogged-metric", lambda: lm_fit("--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/acc"), ("EarlyStopping monitors val/acc", "val/loss, val/ppl")),
    BadInput("fit-quantized", lambda: lm_fit("--quantize", "int8"), ("--quantize int8", "fit trains in floating point")),
    BadInput("quantize-int4", lambda: ["predict", "--config", str(MINILM_CONFIG), "--quantize", "int4"], ("quantize", "int8")),
    BadInput("quantize-in-bf16", lambda: ["validate", *lm_fit()[1:], "--quantize", "int8", "--trainer.precision", "bf16-mixed"], ("precision 32-true",)),
    BadInput("generate-quantize-int4", lambda: ["generate", "--ckpt_path", LAST, "--quantize", "int4"], ("quantize", "int8")),
    BadInput("serve-missing-checkpoint", lambda: ["serve", "--ckpt_path", "nope.ckpt"], ("nope.ckpt", "does not exist")),
    BadInput("serve-port-out-of-range", lambda: ["serve", "--ckpt_path", LAST, "--port", "70000"], ("--port is 70000", "1024 to 65535")),
    BadInput("serve-batch-of-zero", lambda: ["serve", "--ckpt_path", LAST, "--max_batch_size", "0"], ("--max_batch_size is 0", "1 or more")),
    BadInput("unknown-weights", lambda: gpt_finetune("--model.init_args.backbone.init_args.weights", "zeros"), ("weights", "zeros")),
    BadInput("bad-hub-source", lambda: gpt_finetune("--data.train", "hub:glue"), ("hub:glue", "hub:<dataset>:<split>")),
    BadInput("missing-split-file", lambda: gpt_finetune("--data.val", "nope.tsv"), ("nope.tsv", "does not exist")),
    BadInput(
        "export-transformer-lm-checkpoint",
        lambda: ["export", "--ckpt_path", "transformer-lm-network.ckpt", "--output_dir", "out"],
        ("TransformerLM network", "not GPT-2 shaped", "GPT config"),
    ),
    BadInput("export-over-a-folder", lambda: ["export", "--ckpt_path", LAST, "--output_dir", "plain-folder"], ("plain-folder already exists", "--overwrite")),
    BadInput("export-without-folder", lambda: ["export", "--ckpt_path", LAST], ("--output_dir",)),
    BadInput("export-into-missing-parent", lambda: ["export", "--ckpt_path", LAST, "--output_dir", "no/such/out"], ("no/such", "does not exist")),
    # tune: the search space and tune's own options, all checked before any trial
    BadInput("tune-space-key-misspelt", lambda: tune("misspelt.yaml"), ("misspelt.yaml", "model.init_args.learning_rat", "did you mean model.init_args.learning_rate")),
    BadInput("tune-low-above-high", lambda: tune("low-above-high.yaml"), ("low-above-high.yaml", "low 0.01 is above high 0.001", "swap")),
    BadInput("tune-metric-never-logged", lambda: tune("unlogged-metric.yaml"), ("metric val/acc is never logged", "val/loss")),
    BadInput("tune-list-item-missing", lambda: tune("beta-5.yaml"), ("betas.5", "index an item that exists")),
    BadInput("tune-choice-of-wrong-type", lambda: tune("text-for-a-number.yaml"), ("search space", "learning_rate: expected float", "fast")),
    BadInput("tune-during-search-unknown-key", lambda: tune("during-search-typo.yaml"), ("search space", "trainer.max_step")),
    BadInput("tune-missing-space-file", lambda: tune("nope.yaml"), ("--search spaces/nope.yaml does not exist", "configs/search")),
    BadInput("tune-without-search", lambda: ["tune", *lm_fit(*BPE)[1:]], ("needs --search",)),
    BadInput("tune-zero-trials", lambda: tune("misspelt.yaml", "--n_trials", "0"), ("--n_trials", "1 or more")),
    BadInput("tune-with-ckpt-path", lambda: tune("misspelt.yaml", "--ckpt_path", LAST), ("drop --ckpt_path",)),
    BadInput("tune-logger-version", lambda: tune("misspelt.yaml", "--trainer.logger.init_args.version", "x"), ("drop --trainer.logger.init_args.version",)),
    BadInput("tune-two-processes-per-trial", lambda: tune("good.yaml", "--trainer.devices", "2", "--trainer.strategy", "ddp"), ("one process", "--workers")),
    BadInput("tune-flag-also-searched", lambda: tune("good.yaml", "--model.init_args.learning_rate", "0.01"), ("--model.init_args.learning_rate is typed", "drop one")),
    BadInput("tune-study-of-other-settings", lambda: tune("good.yaml", "--study_name", "other-settings"), ("was started with another config", "--study_name")),
    # prepare and streaming from a prepared folder
    BadInput("prepare-without-output-dir", lambda: ["prepare", "--data.path", "corpus.txt"], ("--output_dir",)),
    BadInput("prepare-into-a-used-folder", lambda: ["prepare", "--data.path", "corpus.txt", "--output_dir", "plain-folder"], ("plain-folder exists and is not a prepared folder",)),
    BadInput("prepare-unknown-tokenizer", lambda: ["prepare", "--data.path", "corpus.txt", "--data.tokenizer", "wordpiece", "--output_dir", "p"], ("data.tokenizer is 'wordpiece'",)),
    BadInput("prepare-val-fraction-one", lambda: ["prepare", "--data.path", "corpus.txt", "--data.val_fraction", "1", "--output_dir", "p"], ("data.val_fraction is 1",)),
    BadInput("prepare-zero-workers", lambda: ["prepare", "--data.path", "corpus.txt", "--output_dir", "p", "--workers", "0"], ("--workers is 0",)),
    BadInput("prepare-a-table", lambda: ["prepare", "--data.path", "sst/train.tsv", "--output_dir", "p"], ("train.tsv is a table", "plain text")),
    BadInput("prepare-into-a-file", lambda: ["prepare", "--data.path", "corpus.txt", "--output_dir", "a-file"], ("a-file is a file",)),
    BadInput("prepare-inside-the-corpus", lambda: ["prepare", "--data.path", "sst", "--output_dir", "sst/prepared"], ("lies inside data.path", "outside the corpus")),
    BadInput("prepare-missing-parent", lambda: ["prepare", "--data.path", "corpus.txt", "--output_dir", "no/such/p"], ("parent folder", "does not exist")),
    BadInput("prepare-to-s3-without-a-folder", lambda: ["prepare", "--data.path", "corpus.txt", "--output_dir", "s3://corpora"], ("s3://corpora names no bucket and folder", "s3://<bucket>/<folder>")),
    BadInput("stream-from-s3-without-a-bucket", lambda: lm_fit("--data.path", "prepared:s3://"), ("s3:// names no bucket and folder",)),
    BadInput("stream-from-an-unprepared-folder", lambda: lm_fit("--data.path", "prepared:plain-folder"), ("plain-folder is not a folder written by `lightning-llm prepare`",)),
    # training that blows up stops before it saves broken weights
    BadInput(
        "exploding-learning-rate",
        lambda: lm_fit(
            "--model.init_args.learning_rate", "1e30", "--trainer.gradient_clip_val", "null",
            "--trainer.max_steps", "20", "--trainer.val_check_interval", "2", *BPE,
        ),
        ("became", "at step", "learning_rate"),
    ),
]  # fmt: skip


@dataclass(frozen=True)
class Outcomes:
    results: dict[str, subprocess.CompletedProcess]
    changed: list[str]  # files that existed before the cases ran and differ after them


@pytest.fixture(scope="module")
def outcomes(workspace: Path) -> Outcomes:
    """Every case run once, two at a time, each forked from one copy of the imported CLI."""
    before = snapshot(workspace)
    results = run_cli_cases([case.args() for case in CASES], workspace)
    return Outcomes(
        dict(zip([case.name for case in CASES], results, strict=True)), changed_files(before, workspace)
    )


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_ends_in_one_error_line(case: BadInput, outcomes: Outcomes):
    line = error_line(outcomes.results[case.name])
    for fragment in case.says:
        assert fragment in line, f"{fragment!r} missing from: {line}"


def test_no_bad_input_changed_a_file_or_ran_code(outcomes: Outcomes, workspace: Path):
    assert outcomes.changed == []
    assert not (workspace / "PWNED").exists()
    assert "Zen of Python" not in outcomes.results["ckpt-naming-a-foreign-class-to-generate"].stdout


def test_the_good_uses_beside_the_bad_ones_still_work(workspace: Path, tmp_path: Path):
    """Resuming with the same flags, and evaluating the last checkpoint with its config, run; evaluating
    writes nothing into the training run's folder."""
    run = shutil.copytree(workspace, tmp_path / "run")
    trained_config = run / "logs/gpt-shakespeare-char/trained/config.yaml"
    before = trained_config.read_bytes()
    validated = run_cli(["validate", *lm_fit(*BPE)[1:], "--ckpt_path", "last"], run)
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert trained_config.read_bytes() == before
    resumed = run_cli(
        lm_fit(*BPE, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--ckpt_path", LAST)
        + ["--trainer.logger.init_args.version", "trained"],
        run,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run / LAST, weights_only=True)["global_step"] == 4


def test_a_blown_up_run_keeps_only_checkpoints_of_finite_weights(workspace: Path, tmp_path: Path):
    """After the stop, every checkpoint the run wrote loads with finite weights, and the message names it."""
    run = shutil.copytree(workspace, tmp_path / "run")
    args = lm_fit("--model.init_args.learning_rate", "3", "--trainer.gradient_clip_val", "null", *BPE)
    args += ["--trainer.max_steps", "200", "--trainer.val_check_interval", "1"]
    args += ["--trainer.logger.init_args.version", "blown"]
    line = error_line(run_cli(args, run))
    written = sorted((run / "logs/gpt-shakespeare-char/blown/checkpoints").glob("*.ckpt"))
    for path in written:
        weights = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(tensor).all() for tensor in weights.values()), path
    assert ("newest checkpoint" in line) == bool(written), line
