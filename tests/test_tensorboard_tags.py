"""What TensorBoard shows after `lightning-llm fit`: the tags in the event files, and the same tags served by
`tensorboard` itself (started as `make tensorboard` starts it) through its HTTP API."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from bert_fixtures import tiny_bert, write_sst_like  # noqa: F401
from lm_helpers import tiny_lm_overrides
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.data import DataLoader, TensorDataset

from lightning_llm.callbacks.training_logs import TrainingLogs
from lightning_llm.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GPT_RUN = "gpt-shakespeare-char/version_0"
CLASSIFIER_RUN = "minilm-sst2/version_0"
CLIP = 1e-4  # far below any gradient norm of these runs, so the logged norm shows it is taken before clipping
GPT_SCALARS = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "val/loss", "val/ppl"}
CLASSIFIER_SCALARS = {"train/loss", "train/lr", "train/grad_norm", "train/examples_per_sec", "val/loss"}
CLASSIFIER_SCALARS |= {"val/acc", "val/f1", "val/precision", "val/recall"}


@pytest.fixture(scope="module")
def logs(tmp_path_factory, tiny_bert) -> Path:
    """A tiny GPT run and a tiny classifier run, both from the shipped configs through the CLI."""
    root = tmp_path_factory.mktemp("tensorboard")
    corpus = root / "corpus.txt"
    corpus.write_text(
        "".join(f"ROMEO: the quick brown fox {i % 7} jumps over the lazy dog.\n" for i in range(400))
    )
    common = ["--trainer.logger.init_args.save_dir", str(root / "logs"), "--trainer.log_every_n_steps", "2"]
    common += ["--trainer.enable_progress_bar", "false", "--trainer.gradient_clip_val", str(CLIP)]
    lm_args = ["--config", str(CONFIGS / "gpt-shakespeare-char.yaml"), *tiny_lm_overrides(corpus)]
    lm_args += ["--data.cache_dir", str(root / "cache"), "--trainer.max_steps", "6"]
    lm_args += ["--trainer.val_check_interval", "3", "--trainer.callbacks.max_new_tokens", "8"]
    main(["fit", *lm_args, *common])
    classifier_args = [
        "--config",
        str(CONFIGS / "minilm-sst2.yaml"),
        "--model.init_args.backbone.init_args.pretrained",
        str(tiny_bert),
    ]
    classifier_args += ["--data.data_dir", str(write_sst_like(root / "sst")), "--data.batch_size", "8"]
    main(["fit", *classifier_args, "--trainer.max_epochs", "1", *common])
    return root / "logs"


def hparams_of(run_dir: Path) -> dict[str, object]:
    """The hyperparameters (name -> plain value) of a run's HParams session, which must have ended."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    # No per-run experiment: TensorBoard would show one run's metric columns for the whole logdir.
    assert set(content) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}


def test_event_files_hold_every_tag_and_the_hyperparameters(logs):
    gpt = EventAccumulator(str(logs / GPT_RUN))
    gpt.Reload()
    assert set(gpt.Tags()["scalars"]) >= GPT_SCALARS
    assert "hp_metric" not in gpt.Tags()["scalars"]  # default_hp_metric: false, no placeholder table
    assert "samples/text/text_summary" in gpt.Tags()["tensors"]
    norms = [event.value for event in gpt.Scalars("train/grad_norm")]
    logged_steps = [event.step for event in gpt.Scalars("train/loss")]
    assert len(logged_steps) == 3  # every second of 6 steps
    for tag in ("train/grad_norm", "train/lr", "train/tokens_per_sec"):
        assert [event.step for event in gpt.Scalars(tag)] == logged_steps, tag
    assert all(norm > 10 * CLIP for norm in norms)  # measured before clipping to CLIP
    assert all(event.value > 0 for event in gpt.Scalars("train/tokens_per_sec"))
    params = hparams_of(logs / GPT_RUN)
    assert params["model"] == "lightning_llm.models.GPT" and params["model.n_layer"] == 1
    assert params["learning_rate"] == pytest.approx(1e-3) and params["block_size"] == 16
    assert params["betas"] == "[0.9, 0.99]" and params["decay_steps"] == "None"  # plain text, not objects

    classifier = EventAccumulator(str(logs / CLASSIFIER_RUN))
    classifier.Reload()
    assert set(classifier.Tags()["scalars"]) >= CLASSIFIER_SCALARS
    assert not any(tag.startswith("lr-") for tag in classifier.Tags()["scalars"])  # train/lr replaces them
    assert "val/confusion_matrix" in classifier.Tags()["images"]
    params = hparams_of(logs / CLASSIFIER_RUN)
    assert params["freeze"] == "none" and params["batch_size"] == 8 and params["backbone.num_labels"] == 2
    assert params["backbone"] == "lightning_llm.models.hf_encoder.HFEncoderClassifier"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, body: dict | None = None) -> object:
    # A POST body must be declared JSON: as a form, tensorboard's hparams routes would read it as empty.
    data, headers = (
        (None, {}) if body is None else (json.dumps(body).encode(), {"Content-Type": "application/json"})
    )
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data, headers=headers), timeout=10
    ) as response:
        return json.loads(response.read())


def test_tensorboard_serves_scalars_text_images_and_hparams(logs):
    # The command of `make tensorboard`, on a free local port.
    tensorboard = Path(sys.executable).with_name("tensorboard")
    port = free_port()
    server = subprocess.Popen(
        [str(tensorboard), "--logdir", str(logs), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline = time.monotonic() + 60
        scalars: dict = {}
        while {GPT_RUN, CLASSIFIER_RUN} - set(scalars):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(
                    f"tensorboard did not serve both runs:\n{server.communicate()[0].decode()[-2000:]}"
                )
            time.sleep(0.5)
            try:
                scalars = get_json(f"{base}/scalars/tags")
            except (urllib.error.URLError, ConnectionError):
                continue
        assert set(scalars[GPT_RUN]) >= GPT_SCALARS and set(scalars[CLASSIFIER_RUN]) >= CLASSIFIER_SCALARS
        assert "samples/text/text_summary" in get_json(f"{base}/text/tags")[GPT_RUN]
        assert "val/confusion_matrix" in get_json(f"{base}/images/tags")[CLASSIFIER_RUN]

        experiment = get_json(f"{base}/hparams/experiment", {"experimentName": ""})
        metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert {"val/loss", "val/ppl", "val/acc", "val/f1"} <= metric_tags
        assert {"learning_rate", "model.n_layer", "freeze"} <= {
            info["name"] for info in experiment["hparamInfos"]
        }
        # Each run is a session whose metric values are the last logged values: the final metrics.
        request = {"experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": []}
        request["allowedStatuses"] = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        groups = get_json(f"{base}/hparams/session_groups", request)["sessionGroups"]
        final = {
            (session["name"], value["name"]["tag"]): value["value"]
            for group in groups
            for session in group["sessions"]
            for value in session["metricValues"]
        }
        for run, tag in ((GPT_RUN, "val/loss"), (GPT_RUN, "val/ppl"), (CLASSIFIER_RUN, "val/acc")):
            assert math.isfinite(final[(run, tag)]), (run, tag)
        assert {session["status"] for group in groups for session in group["sessions"]} == {"STATUS_SUCCESS"}
    finally:
        server.terminate()
        server.wait(timeout=10)


class SlowValidation(pl.Callback):
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        time.sleep(1.0)


class TinyRegression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    throughput_unit = "examples"

    def units_in(self, batch: list[torch.Tensor]) -> int:
        return len(batch[0])


def test_throughput_leaves_validation_time_out():
    loader = DataLoader(TensorDataset(torch.randn(160, 4)), batch_size=4)
    trainer = pl.Trainer(
        max_steps=40,
        log_every_n_steps=10,
        val_check_interval=15,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[SlowValidation(), TrainingLogs()],
        logger=pl.loggers.CSVLogger("logs"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(TinyRegression(), loader, loader)
    with Path(trainer.logger.log_dir, "metrics.csv").open() as file:
        rates = [
            float(row["train/examples_per_sec"])
            for row in csv.DictReader(file)
            if row["train/examples_per_sec"]
        ]
    # 40 examples between logs; a 1 s validation counted as training would hold every rate below 40/s.
    assert len(rates) == 4 and min(rates[1:]) > 40, rates
