"""The executable examples in the tinyllm.rag docstrings."""

import doctest
import importlib

import pytest

MODULES = ["bm25", "collapse", "embedders", "exact", "fusion", "hnsw", "ivf", "lsh"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tinyllm.rag.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
