"""Every notebook, alone, in a fresh kernel, in fast mode: any error output fails."""

import nbformat
import pytest

import run_notebooks as runner
from llmlab.colab import SETUP_CELL

NOTEBOOKS = runner.all_notebooks()


def test_there_are_notebooks():
    assert [nb.name[:2] for nb in NOTEBOOKS][:1] == ["00"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_first_code_cell_is_the_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert first_code.source == SETUP_CELL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_alone_in_fast_mode(path):
    runner.execute(path, "fast")


def test_an_error_output_fails_the_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("1 / 0")]
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(runner.NotebookError, match="ZeroDivisionError"):
        runner.execute(path, "fast")


def test_a_traceback_printed_to_stderr_fails_the_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import sys, traceback\ntry:\n    {}['k']\nexcept KeyError:\n    traceback.print_exc()")]
    path = tmp_path / "98_swallowed.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(runner.NotebookError, match="traceback printed on stderr"):
        runner.execute(path, "fast")
