"""`lightning-llm export`: a fine-tuned classifier as a Hugging Face folder that `transformers.pipeline` loads."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from bert_fixtures import classifier_overrides, sst_like_dir, tiny_bert  # noqa: F401

from lightning_llm.cli import main


def fit_and_predict_dev(folder: Path, tiny_bert: Path, *extra: str) -> tuple[Path, list[dict]]:
    """Fine-tune for an epoch (LoRA or full), then predict the dev sentences with `lightning-llm predict`."""
    args = [*classifier_overrides(folder, tiny_bert), *extra]
    main(["fit", *args, "--trainer.max_epochs", "1", "--model.init_args.learning_rate", "1e-2"])
    checkpoint = Path("logs/minilm-sst2/version_0/checkpoints/last.ckpt")
    main(["predict", *args, "--data.predict", "dev.tsv", "--ckpt_path", str(checkpoint)])
    with open("predictions/minilm-sst2.csv", encoding="utf-8", newline="") as file:
        return checkpoint, list(csv.DictReader(file))


@pytest.mark.parametrize("extra", [[], ["--model.init_args.lora", "{r: 4, alpha: 8}"]], ids=["full", "lora"])
def test_pipeline_predicts_the_labels_predict_wrote(sst_like_dir, tiny_bert, extra):
    from transformers import pipeline

    checkpoint, predicted = fit_and_predict_dev(sst_like_dir, tiny_bert, *extra)
    main(["export", "--ckpt_path", str(checkpoint), "--output_dir", "exported"])
    assert (
        not list(Path("exported").rglob("*lora*")) and "lora" not in Path("exported/config.json").read_text()
    )
    classify = pipeline("text-classification", model="exported")
    results = classify([row["text"] for row in predicted])
    assert [result["label"] for result in results] == [row["label"] for row in predicted]
    # the same probabilities too, not just the same argmax (a barely trained model sits near 0.5)
    scores = [result["score"] for result in results]
    assert scores == pytest.approx([float(row["probability"]) for row in predicted], abs=1e-5)


def test_existing_folder_is_kept_unless_overwrite(sst_like_dir, tiny_bert, capsys):
    checkpoint, _ = fit_and_predict_dev(sst_like_dir, tiny_bert)
    Path("exported").mkdir()
    (Path("exported") / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exited:
        main(["export", "--ckpt_path", str(checkpoint), "--output_dir", "exported"])
    assert exited.value.code == 2
    assert "exported already exists: pass --overwrite true" in capsys.readouterr().err
    assert (Path("exported") / "mine.txt").read_text() == "keep me"
    # --overwrite replaces an earlier export, never a folder holding anything else
    with pytest.raises(SystemExit):
        main(["export", "--ckpt_path", str(checkpoint), "--output_dir", "exported", "--overwrite", "true"])
    assert "holds files an export does not write (mine.txt)" in capsys.readouterr().err
    assert (Path("exported") / "mine.txt").read_text() == "keep me"
    for folder in (".", "logs"):
        with pytest.raises(SystemExit):
            main(["export", "--ckpt_path", str(checkpoint), "--output_dir", folder, "--overwrite", "true"])
        assert "holds the working directory or the checkpoint" in capsys.readouterr().err
    main(["export", "--ckpt_path", str(checkpoint), "--output_dir", "again"])
    first = (Path("again") / "model.safetensors").read_bytes()
    main(["export", "--ckpt_path", str(checkpoint), "--output_dir", "again", "--overwrite", "true"])
    assert (Path("again") / "model.safetensors").read_bytes() == first
    assert [p.name for p in Path(".").glob(".again*")] == []  # no staging or previous folder left behind
