"""tinyllm: a from-scratch tensor-and-autograd engine with hand-written backward passes.

import tinyllm
x = tinyllm.randn(3, 4, requires_grad=True)
(x.tanh() * x).sum().backward()
x.grad            # d/dx sum(x tanh x)
"""

import numpy as _np

from tinyllm import backward as _backward
from tinyllm import functional, nn, optim, runtime, utils  # noqa: F401  (runtime: tune_process(); utils: as torch.utils)
from tinyllm.anomaly import detect_anomaly
from tinyllm.backend import cuda_is_available, manual_seed
from tinyllm.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from tinyllm.embeddings import MiniLMEmbedder
from tinyllm.function import Context, Function
from tinyllm.functional import (
    abs,
    cat,
    chunk,
    clamp,
    cos,
    exp,
    gather,
    log,
    logsumexp,
    masked_fill,
    matmul,
    maximum,
    minimum,
    sigmoid,
    sin,
    split,
    sqrt,
    stack,
    tanh,
    tril,
    triu,
    where,
)
from tinyllm.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from tinyllm.gradcheck import GradcheckError, gradcheck
from tinyllm.profiler import profile
from tinyllm.tensor import Tensor, bind_ops

# The engine, bottom up: tensor <- function <- functional, and tensor <- backward. Tensor's
# methods reach the ops and the backward pass through the tables bound here, so
# tinyllm.tensor imports none of the modules above it (tests/engine/test_import_graph.py).
# Nothing above runs a Tensor op at import time; one that did would raise, naming this.
bind_ops(functional, _backward.run_backward)
del bind_ops

__version__ = "0.1.0"

float16 = _np.dtype(_np.float16)
float32 = _np.dtype(_np.float32)
float64 = _np.dtype(_np.float64)
int32 = _np.dtype(_np.int32)
int64 = _np.dtype(_np.int64)
bool_ = _np.dtype(_np.bool_)
float = float32
double = float64
long = int64


class cuda:  # noqa: N801  (mirrors torch.cuda.is_available())
    is_available = staticmethod(cuda_is_available)


__all__ = [
    "Context", "Function", "GradcheckError", "MiniLMEmbedder", "Tensor", "abs", "arange",
    "as_tensor", "cat",
    "chunk", "clamp", "cos", "cuda", "detect_anomaly", "empty", "empty_like", "enable_grad",
    "exp", "eye", "from_numpy", "full", "full_like", "functional", "gather", "gradcheck", "nn",
    "optim", "profile",
    "is_grad_enabled", "linspace", "log", "logsumexp", "manual_seed", "masked_fill", "matmul",
    "maximum", "minimum", "no_grad", "ones", "ones_like", "rand", "rand_like", "randint",
    "randn", "randn_like", "randperm", "set_grad_enabled", "sigmoid", "sin", "split", "sqrt",
    "stack", "tanh", "tensor", "tril", "triu", "where", "zeros", "zeros_like",
]  # fmt: skip
