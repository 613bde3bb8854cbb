"""The kernels' Numba cache notices edits of a helper in another file (kernels/numba_cache.py)."""

import subprocess
import sys
import textwrap
from pathlib import Path

from tinyllm.kernels import numba_cache

CALLER = """
from numba import njit
from numba_math import helper

@njit(cache=True)
def caller(x):
    return helper(x) * 10
"""
HELPER = """
from numba import njit

@njit(cache=True)
def helper(x):
    return x + {increment}
"""
RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {directory!r})
if {install}:
    from tinyllm.kernels import numba_cache
    assert numba_cache.install(Path({directory!r}))
import a_numba
print(a_numba.caller(1))
"""


def _run(directory: Path, install: bool) -> int:
    code = textwrap.dedent(RUN).format(directory=str(directory), install=install)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    return int(done.stdout.split()[-1])


def _results(tmp_path: Path, install: bool) -> tuple[int, int]:
    """caller(1) with helper's increment 1, then again after the helper's file alone is
    edited (increment 2), each in a fresh process that loads from the on-disk cache."""
    directory = tmp_path / ("ours" if install else "numba")
    directory.mkdir()
    (directory / "a_numba.py").write_text(CALLER)
    (directory / "numba_math.py").write_text(HELPER.format(increment=1))
    before = _run(directory, install)
    (directory / "numba_math.py").write_text(HELPER.format(increment=2) + "\n# edited\n")
    return before, _run(directory, install)


def test_editing_a_helper_recompiles_its_callers(tmp_path):
    assert _results(tmp_path, install=True) == (20, 30)


def test_without_the_kernel_locators_numba_loads_the_stale_caller(tmp_path):
    """The premise: Numba's own stamp covers only the caller's file (if a Numba release
    fixes this, this test fails and numba_cache.py can go)."""
    assert _results(tmp_path, install=False) == (20, 20)


def test_the_kernels_and_the_search_kernels_use_the_stamped_locators():
    from tinyllm.kernels import softmax_numba
    from tinyllm.rag import hnsw_kernels

    assert numba_cache.install()
    for function in (softmax_numba.softmax_rows, hnsw_kernels.hnsw_search):
        locator = function._cache._impl._locator
        assert type(locator).__name__.startswith("Stamped")
        directory = Path(function.py_func.__code__.co_filename).resolve().parent
        assert locator.get_source_stamp()[1] == numba_cache.sources_stamp(directory)
    names = [p.name for p in numba_cache.jitted_sources(numba_cache.KERNEL_DIR)]
    assert "numba_math.py" in names and "decode_numba.py" in names
    assert "numba_cache.py" not in names and "softmax.py" not in names


def test_the_stamp_covers_the_jitted_sources_and_nothing_else(tmp_path):
    jitted = "from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x\n"
    (tmp_path / "helper.py").write_text(jitted)
    (tmp_path / "caller.py").write_text(jitted)
    (tmp_path / "plain.py").write_text("x = 1  # mentions @njit, not as a decorator\n")
    assert [p.name for p in numba_cache.jitted_sources(tmp_path)] == ["caller.py", "helper.py"]
    stamp = numba_cache.sources_stamp(tmp_path)
    (tmp_path / "plain.py").write_text("x = 2\n")
    assert numba_cache.sources_stamp(tmp_path) == stamp
    (tmp_path / "helper.py").write_text(jitted.replace("return x", "return x + 1"))
    assert numba_cache.sources_stamp(tmp_path) != stamp
