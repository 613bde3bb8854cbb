"""Write the guide's notebooks (``guide/NN_topic.ipynb``) from their sources in ``guide/src``.

Each source is a Python file in the "percent" format: ``# %%`` starts a code cell and
``# %% [markdown]`` a markdown cell whose lines are comments (``# `` is stripped). The
notebooks are written without outputs or execution counts, so the repository holds only
what a reader should see before running them. A ``# ruff: noqa: E501`` line before the first
cell lets the LaTeX of the markdown comments run past 100 columns (the code cells are still
linted at 100 columns in the notebooks themselves).

    python guide/build.py            # rewrite every notebook
    python guide/build.py --check    # exit 1 if a notebook differs from its source
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

GUIDE = Path(__file__).resolve().parent
SOURCES = GUIDE / "src"


def cells_of(text: str) -> list[tuple[str, str]]:
    """(kind, source) per cell of a percent-format file; kind is "code" or "markdown"."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip() and not line.startswith("# ruff:"):
            raise ValueError(f"text before the first '# %%' marker: {line!r}")
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        source = "\n".join(lines).strip("\n")
        if source:
            out.append((kind, source))
    return out


def notebook_of(source_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for k, (kind, source) in enumerate(cells_of(source_path.read_text(encoding="utf-8"))):
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(source)
        cell["id"] = f"{source_path.stem.split('_')[0]}-{k:02d}"  # stable ids: no diff noise
        nb.cells.append(cell)
    return nb


def render(source_path: Path) -> str:
    return nbformat.writes(notebook_of(source_path)) + "\n"


def targets() -> list[tuple[Path, Path]]:
    return [(src, GUIDE / f"{src.stem}.ipynb") for src in sorted(SOURCES.glob("[0-9][0-9]_*.py"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook is stale")
    args = parser.parse_args(argv)
    stale = []
    for src, dst in targets():
        text = render(src)
        if args.check:
            if not dst.exists() or dst.read_text(encoding="utf-8") != text:
                stale.append(dst.name)
        else:
            dst.write_text(text, encoding="utf-8")
            print(f"wrote {dst.relative_to(GUIDE.parent)}")
    if stale:
        print("stale notebooks (run python guide/build.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
