"""Files the commands write: an existing file is kept unless overwriting was asked for, a folder in the way
or an unwritable place fails before any work, and errors name the file the user asked for."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from lightning_llm.atomic import atomic_open
from lightning_llm.callbacks.prediction_writer import PredictionWriter
from lightning_llm.data.labelled_text import read_table
from lightning_llm.errors import UserError, user_error_in


def test_predictions_never_replace_an_existing_file_unless_asked(tmp_path):
    existing = tmp_path / "precious.csv"
    existing.write_text("precious,data\n")
    with pytest.raises(UserError, match="already exists.*overwrite: true"):
        PredictionWriter(str(existing)).on_predict_start(None, None)
    assert existing.read_text() == "precious,data\n"
    PredictionWriter(str(existing), overwrite=True).on_predict_start(None, None)


def test_predictions_into_a_folder_fail_before_predicting(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        PredictionWriter(str(tmp_path / "out.csv"), overwrite=True).on_predict_start(None, None)


def test_a_write_under_a_file_names_that_file_and_the_fix(tmp_path):
    (tmp_path / "a-file").write_text("in the way\n")
    with pytest.raises(OSError) as raised, atomic_open(tmp_path / "a-file" / "out.csv", "w") as handle:
        handle.write("never")
    message = str(user_error_in(raised.value))
    assert message.startswith(str(tmp_path / "a-file")) and "a file stands where a folder belongs" in message
    assert (tmp_path / "a-file").read_text() == "in the way\n"


def test_a_full_disk_is_one_sentence_naming_the_file():
    error = OSError(errno.ENOSPC, "No space left on device", "logs/run/last.ckpt")
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = error
    assert (
        str(user_error_in(wrapped)) == "logs/run/last.ckpt: the disk is full: free space or write elsewhere"
    )


def test_an_error_chain_that_loops_back_ends(tmp_path):
    error = RuntimeError("loops")
    error.__cause__ = error
    assert user_error_in(error) is None


def test_a_csv_header_with_a_repeated_column_is_refused(tmp_path):
    table = tmp_path / "train.csv"
    table.write_text("sentence,sentence,label\na,b,1\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"\['sentence'\] more than once"):
        read_table(Path(table))


def test_a_write_the_folder_refuses_names_the_target_not_the_temp_file():
    with pytest.raises(OSError) as raised, atomic_open("/proc/predictions.csv", "w") as handle:
        handle.write("never")
    assert raised.value.filename == "/proc/predictions.csv"
