"""The executable examples in the tinyllm.agents docstrings."""

import doctest
import importlib

import pytest

MODULES = ["regex", "token_mask", "json_schema", "logits", "toolkit"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tinyllm.agents.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
