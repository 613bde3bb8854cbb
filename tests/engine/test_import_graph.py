"""The engine's import graph points one way: backend <- tensor <- function <- functional.

Read from the source with ``ast`` (every ``import`` statement, at module level or inside a
function: a lazy import is still a dependency), so the check does not depend on what
happens to be imported already in the test process. ``tinyllm.tensor`` gets its ops and the
backward pass injected by ``tinyllm/__init__`` (``tensor.bind_ops``) instead of importing
them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the source folders and the package names they install as (setup.py's package-dir)
PACKAGES = {"tinyllm": ROOT / "tinyllm", "tinyllm.kernels": ROOT / "kernels"}


def _modules() -> dict[str, Path]:
    """Every module of tinyllm and tinyllm.kernels, by dotted name."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> set[str]:
    """The tinyllm modules that one import statement of ``module`` loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {n for n in names if n in MODULES}
    base = node.module or ""
    if node.level:  # relative import
        parent = module.split(".") if is_package else module.split(".")[:-1]
        parent = parent[: len(parent) - (node.level - 1)]
        base = ".".join(parent + ([base] if base else []))
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in MODULES:  # from package import submodule
            found.add(sub)
        elif base in MODULES:
            found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the tinyllm modules it imports (any import statement, at any depth)."""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _resolve(name, node, path.name == "__init__.py")
        graph[name] = deps - {name}
    return graph


GRAPH = import_graph()


def _reachable(start: str, within: set[str]) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for dep in GRAPH[stack.pop()] & within:
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def _is_engine(name: str) -> bool:
    return name in (
        "tinyllm.tensor", "tinyllm.function", "tinyllm.backward", "tinyllm.backend",
        "tinyllm.grad_mode", "tinyllm.anomaly", "tinyllm.profiler_state",
    ) or name.startswith(("tinyllm.functional", "tinyllm.kernels"))  # fmt: skip


ENGINE = {m for m in MODULES if _is_engine(m)}


def test_the_graph_was_read():
    """Guards the test itself: the resolver sees the imports it must see."""
    assert "tinyllm.tensor" in GRAPH["tinyllm.function"]
    assert "tinyllm.function" in GRAPH["tinyllm.functional.losses"]
    assert "tinyllm.kernels" in GRAPH["tinyllm.functional.softmax"]
    assert "tinyllm.backend" in GRAPH["tinyllm.tensor"]


@pytest.mark.parametrize("above", ["tinyllm.function", "tinyllm.backward", "tinyllm.functional"])
def test_tensor_does_not_import_the_layers_above_it(above):
    reached = _reachable("tinyllm.tensor", set(MODULES))
    offenders = sorted(m for m in reached if m == above or m.startswith(above + "."))
    assert not offenders, f"tinyllm.tensor imports (directly or not) {offenders}"


def test_engine_has_no_import_cycle():
    cycles = sorted(m for m in ENGINE if m in _reachable(m, ENGINE))
    assert not cycles, f"engine modules on an import cycle: {cycles}"


def test_kernels_never_reach_a_tensor():
    """Kernels see arrays, never a Tensor: no kernel module reaches, even through a lazy
    import, the Tensor engine or anything built on it (process-level modules such as
    ``tinyllm.backend`` and ``tinyllm.runtime`` are fine)."""
    above = ("tinyllm.tensor", "tinyllm.function", "tinyllm.backward", "tinyllm.functional",
             "tinyllm.nn", "tinyllm.optim", "tinyllm.models", "tinyllm.registry")  # fmt: skip
    for name in MODULES:
        if name.startswith("tinyllm.kernels"):
            reached = _reachable(name, set(MODULES))
            bad = sorted(
                m for m in reached if m in above or m.startswith(tuple(a + "." for a in above))
            )
            assert not bad, f"{name} reaches {bad}"
