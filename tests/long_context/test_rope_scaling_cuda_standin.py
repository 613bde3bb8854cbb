"""YaRN-scaled RoPE on device="cuda" (the CuPy stand-in, tests/cupy_standin; no GPU needed):
the functional tables are built by the array module of the device (CuPy there), the op runs
the rope kernels' CUDA tier, and outputs and gradients equal the CPU's."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.nn.positional import RotaryEmbedding

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

pytestmark = cupy_standin.needs_compiler()
standin = cupy_standin.fixture()

YARN = {"type": "yarn", "factor": 4.0, "original_max_position": 16, "beta_fast": 8,
        "beta_slow": 0.5}  # fmt: skip


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_yarn_rotary_on_cuda_equals_cpu(layout):
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 16))
    dy = np.random.default_rng(1).standard_normal(x.shape)
    out = {}
    for device in ("cpu", "cuda"):
        t = tinyllm.tensor(x, device=device, requires_grad=True)
        y = F.rotary_embedding(t, scaling=YARN, layout=layout, offset=5)
        y.backward(tinyllm.tensor(dy, device=device))
        out[device] = (y.detach().cpu().numpy(), t.grad.cpu().numpy())
    # float64: the same formulas on another array module (NumPy's and the stand-in's pow/cos
    # may differ by an ulp; angles up to 45 rad): 1e-12
    for a, b in zip(out["cuda"], out["cpu"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    module = RotaryEmbedding(16, scaling=YARN)
    like = tinyllm.zeros(1, dtype="float64", device="cuda").data
    cos, sin = module.cos_sin(40, 5, like)
    c, s = F.rope_cos_sin(40, 16, scaling=YARN, offset=5, dtype="float64")
    np.testing.assert_allclose(cos.get(), c.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(sin.get(), s.numpy(), rtol=0, atol=1e-12)
