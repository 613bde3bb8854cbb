"""The op registry: every differentiable op with the inputs that test it.

Each ``OpInfo`` names a public op and gives:
- ``samples(rng, dtype)``: a list of ``SampleInput`` — shapes including size-1, 0-d and
  broadcasting cases, values in the op's domain, away from kinks and ties;
- ``reference``: a NumPy forward written independently of the op, the oracle for the output;
- ``composite`` (fused ops): the same function built from primitive ops, so the engine's
  autograd of the composite checks the hand-written backward;
- tolerances for the float64 gradcheck and for the float32 forward;
- ``kernels``: the names of the ``tinyllm.kernels`` ops it calls (as ``dispatch.run`` and
  ``last_tier`` know them: "layer_norm_forward", "glu_backward", ...); its ``tiers`` are
  read from the kernel layer (``kernels.kernel_tiers``), never written by hand. An op that
  calls no kernel (add, matmul, ...) has no tiers: it runs array code on NumPy or CuPy.

The generic tests (tests/test_registry.py) and ``tinyllm gradcheck`` enumerate the registry, so
an op cannot escape checking by being forgotten; a meta-test fails if a public op of
``tinyllm.functional`` is missing here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Modules that register ops when imported (one per op family).
FAMILY_MODULES = [
    "tinyllm.registry.core",
    "tinyllm.registry.conversion",
    "tinyllm.registry.norms",
    "tinyllm.registry.activations",
    "tinyllm.registry.embedding",
    "tinyllm.registry.dropout",
    "tinyllm.registry.linear",
    "tinyllm.registry.transformer_attention",
    "tinyllm.registry.ssm",
    "tinyllm.registry.conv",
    "tinyllm.registry.moe",
    "tinyllm.registry.long_context",
    "tinyllm.quant.registry",
]


@dataclass
class SampleInput:
    """One call of an op: positional ``args`` (arrays become Tensors) and ``kwargs``.

    Floating arrays in ``args`` become Tensors that require grad, unless their position is
    listed in ``no_grad``; integer and bool arrays become Tensors without grad; other values
    pass through unchanged.
    """

    args: tuple
    kwargs: dict = field(default_factory=dict)
    name: str = ""
    no_grad: tuple = ()


@dataclass
class OpInfo:
    """One public op and what tests it (see the module docstring)."""

    name: str
    op: Callable
    samples: Callable[[np.random.Generator, Any], list]
    reference: Callable | None = None
    composite: Callable | None = None
    family: str = "core"
    differentiable: bool = True
    gradcheck_atol: float = 1e-5
    gradcheck_rtol: float = 1e-3
    forward_atol32: float = 1e-5
    forward_rtol32: float = 1e-4
    aliases: tuple = ()
    kernels: tuple = ()  # names of the tinyllm.kernels ops it calls

    def __post_init__(self) -> None:
        from tinyllm.kernels import declared_kernels

        unknown = [k for k in self.kernels if k not in declared_kernels()]
        if unknown:
            raise ValueError(
                f"OpInfo({self.name!r}): kernels must name declared kernel ops "
                f"(tinyllm.kernels.declared_kernels()), not tiers; unknown: {unknown}"
            )

    @property
    def tiers(self) -> tuple[str, ...]:
        """The kernel tiers this op can run on: the union over its kernels, in TIERS order.

        Empty for an op that calls no kernel (it runs array code on NumPy or CuPy).
        """
        from tinyllm.kernels import TIERS, kernel_tiers

        have = {t for k in self.kernels for t in kernel_tiers(k)}
        return tuple(t for t in TIERS if t in have)

    def tensors(self, sample: SampleInput, requires_grad: bool = True, copy: bool = True):
        """The sample's args with arrays wrapped as Tensors (float ones requiring grad).

        ``copy=False`` wraps the arrays themselves, keeping their strides (the
        non-contiguous test relies on it).
        """
        from tinyllm.tensor import Tensor

        out = []
        for i, a in enumerate(sample.args):
            if isinstance(a, np.ndarray):
                grad = requires_grad and a.dtype.kind == "f" and i not in sample.no_grad
                out.append(Tensor(a.copy() if copy else a, requires_grad=grad))
            else:
                out.append(a)
        return out


_REGISTRY: dict[str, OpInfo] = {}


def register(info: OpInfo) -> OpInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"op {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def all_ops() -> dict[str, OpInfo]:
    """Every registered op, by name (imports the family modules on first use)."""
    for module in FAMILY_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def covered_names() -> set[str]:
    """Names of public functions covered by the registry (op names and their aliases)."""
    names = set()
    for info in all_ops().values():
        names.add(info.name)
        names.update(info.aliases)
    return names
