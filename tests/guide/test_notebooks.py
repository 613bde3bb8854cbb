"""The study guide (``guide/``): its notebooks in reading order, stored without outputs,
each executed here with nbclient so a notebook that stops working fails the suite.

Each notebook asserts its own checks (gradcheck passes, derivations equal tinyllm's
gradients, closed forms hold); executing it without an error is the test. On top of that,
each must draw at least one plot through a non-interactive matplotlib backend.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip(
    "nbformat", reason="the guide's tests need nbformat (pip install -e '.[test]')"
)
nbclient = pytest.importorskip(
    "nbclient", reason="the guide's tests need nbclient (pip install -e '.[test]')"
)
pytest.importorskip(
    "ipykernel", reason="the guide's tests need ipykernel (pip install -e '.[test]')"
)

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "guide"
READING_ORDER = [
    "01_engine.ipynb",
    "02_softmax_cross_entropy.ipynb",
    "03_norms.ipynb",
    "04_attention.ipynb",
    "05_positions.ipynb",
    "06_glu_mlp.ipynb",
    "07_adamw_schedules.ipynb",
    "08_training.ipynb",
    "09_tokenizers.ipynb",
    "10_retrieval.ipynb",
    "11_mamba.ipynb",
    "12_moe.ipynb",
    "13_quantization.ipynb",
    "14_serving.ipynb",
    "15_alignment.ipynb",
]
# Longer than ~10 s on 2 cores: executed under --runslow only (08 trains 150 steps and
# gradchecks every parameter of a model: ~12 s with a warm Numba cache, ~15 s cold).
SLOW = {"08_training.ipynb"}
CELL_TIMEOUT_S = 120  # the slowest cell (notebook 8's 150 training steps) takes ~10 s on 2 cores
NON_INTERACTIVE = ("inline", "agg")  # matplotlib_inline's backend renders PNGs; Agg as well


def _read(name: str):
    return nbformat.read(GUIDE / name, as_version=4)


def test_the_notebooks_are_there_in_reading_order():
    on_disk = sorted(p.name for p in GUIDE.glob("*.ipynb"))
    assert on_disk == READING_ORDER


@pytest.mark.parametrize("name", READING_ORDER)
def test_stored_without_outputs(name):
    nb = _read(name)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has stored outputs (run guide/build.py)"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count"


def test_notebooks_are_built_from_their_sources():
    result = subprocess.run(
        [sys.executable, str(GUIDE / "build.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", READING_ORDER)
def test_each_notebook_derives_gradchecks_and_plots(name):
    nb = _read(name)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.search(r"\$\$.+?\$\$", markdown, re.S), f"{name}: no displayed LaTeX derivation"
    assert "gradcheck" in code, f"{name}: no gradcheck"
    assert "plt.show()" in code, f"{name}: no plot"


def test_matplotlib_backend_under_nbclient_is_not_interactive():
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import matplotlib, json; print(json.dumps(matplotlib.get_backend()))"
        )
    )
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3").execute()
    backend = json.loads(nb.cells[0].outputs[0]["text"]).lower()
    assert any(word in backend for word in NON_INTERACTIVE), backend


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in READING_ORDER]
)
def test_notebook_executes(name):
    nb = _read(name)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(GUIDE)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert images, f"{name}: executed, but drew no figure"
