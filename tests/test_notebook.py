"""notebooks/analyze_sweep.ipynb runs top to bottom against a sweep directory, as CI runs it.

The sweep is $RAYSWEEP_TEST_SWEEP_DIR when set (a real sweep from the integration tests), else
the synthetic one from tests/sweep_fixture.py. Any error in any cell fails the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "analyze_sweep.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:80]
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "RAYSWEEP_SWEEP_DIR" in parameters[0].source


def execute_notebook(sweep_dir, workdir, monkeypatch):
    """Run the notebook top to bottom against `sweep_dir`; return its code-cell outputs."""
    # The kernel inherits this process's environment: the sweep, a cheaper bootstrap, and the
    # working tree's raysweep ahead of any installed copy.
    monkeypatch.setenv("RAYSWEEP_SWEEP_DIR", str(sweep_dir))
    monkeypatch.setenv("RAYSWEEP_N_BOOT", "200")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


@pytest.mark.slow
def test_notebook_runs_against_a_sweep(tmp_path, monkeypatch):
    sweep_dir = os.environ.get("RAYSWEEP_TEST_SWEEP_DIR")
    if not sweep_dir:
        from sweep_fixture import write_sweep

        sweep_dir = write_sweep(tmp_path / "sweep").sweep_dir
    outputs = execute_notebook(sweep_dir, tmp_path, monkeypatch)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # heat map, gain by language and kind, scaling fits, lr law
    text = "".join(o.get("text", "") for o in outputs)
    assert "skipped" not in text or os.environ.get("RAYSWEEP_TEST_SWEEP_DIR"), text
