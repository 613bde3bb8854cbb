"""tests/gpu: tinyllm on ``device="cuda"`` with the CuPy stand-in (tests/cupy_standin).

Every test module here runs with the stand-in installed as ``cupy``; nothing needs a GPU.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

pytestmark = cupy_standin.needs_compiler()
standin = cupy_standin.fixture()  # the stand-in as ``cupy`` for each whole module


@pytest.fixture
def counters():
    """The stand-in's counters, reset."""
    cupy_standin.COUNTERS.reset()
    return cupy_standin.COUNTERS
