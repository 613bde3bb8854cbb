"""Differentiable functions (``import tinyllm.functional as F``), PyTorch names and signatures.

Each function validates its arguments, then applies one ``Function`` whose backward is
written by hand. One file per family; each declares ``__all__``, and this package exports
the union, so ``F.__all__`` is the list of public ops that the registry meta-test checks.
"""

import importlib as _importlib

from tinyllm.functional.activations import *  # noqa: F403
from tinyllm.functional.arithmetic import *  # noqa: F403
from tinyllm.functional.attention import *  # noqa: F403
from tinyllm.functional.comparison import *  # noqa: F403
from tinyllm.functional.conv import *  # noqa: F403
from tinyllm.functional.conversion import *  # noqa: F403
from tinyllm.functional.dropout import *  # noqa: F403
from tinyllm.functional.embedding import *  # noqa: F403
from tinyllm.functional.gateloop import *  # noqa: F403
from tinyllm.functional.indexing import *  # noqa: F403
from tinyllm.functional.linalg import *  # noqa: F403
from tinyllm.functional.linear import *  # noqa: F403
from tinyllm.functional.linear_attention import *  # noqa: F403
from tinyllm.functional.losses import *  # noqa: F403
from tinyllm.functional.moe import *  # noqa: F403
from tinyllm.functional.norms import *  # noqa: F403
from tinyllm.functional.pointwise import *  # noqa: F403
from tinyllm.functional.positional import *  # noqa: F403
from tinyllm.functional.reductions import *  # noqa: F403
from tinyllm.functional.rwkv import *  # noqa: F403
from tinyllm.functional.shape import *  # noqa: F403
from tinyllm.functional.softmax import *  # noqa: F403
from tinyllm.functional.ssm import *  # noqa: F403

_FAMILIES = (
    "activations", "arithmetic", "attention", "comparison", "conv", "conversion", "dropout",
    "embedding", "indexing", "linalg", "linear", "losses", "moe", "norms", "pointwise",
    "positional", "reductions", "shape", "softmax", "ssm", "linear_attention", "rwkv",
    "gateloop",
)  # fmt: skip
__all__ = sorted(
    {
        name
        for family in _FAMILIES
        for name in _importlib.import_module(f"tinyllm.functional.{family}").__all__
    }
)
