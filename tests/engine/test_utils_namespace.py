"""``import tinyllm`` makes ``tinyllm.utils`` available, as ``import torch`` does ``torch.utils``.

Each check runs in a fresh interpreter, so an import cycle (tinyllm/__init__ importing
tinyllm.utils, whose modules import the engine) shows up whichever module is imported first.
"""

import subprocess
import sys

import pytest

CHECKS = {
    "import tinyllm": (
        "import tinyllm, numpy as np\n"
        "x = tinyllm.tensor(np.arange(3.0), requires_grad=True)\n"
        "tinyllm.utils.checkpoint(lambda t: (t * t).sum(), x).backward()\n"
        "assert x.grad.numpy().tolist() == [0.0, 2.0, 4.0]\n"
        "assert callable(tinyllm.utils.checkpoint_sequential)\n"
    ),
    "import tinyllm.utils first": "import tinyllm.utils, tinyllm\nassert tinyllm.utils.checkpoint\n",
    "from the submodule first": (
        "from tinyllm.utils.checkpoint import checkpoint\nimport tinyllm\n"
        "assert tinyllm.utils.checkpoint is checkpoint\n"
    ),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_tinyllm_utils_is_available_without_an_import_cycle(name):
    result = subprocess.run(
        [sys.executable, "-c", CHECKS[name]], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
