"""bfloat16 tensors (ml_dtypes) are differentiable: the engine records their ops, their
gradients are stored in bfloat16, and a whole model trains in bfloat16.

The oracle is the same computation in float32 from the same bfloat16-rounded inputs, so the
only difference is the rounding of intermediates and gradients to bfloat16 (unit roundoff
2^-9 ~ 2e-3 each). The bounds allow for a dozen such roundings along a path: measured worst
errors are 2.8e-3 (the op chain) and 6.2e-3 (the model).
"""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm.models import ModelConfig, build_model

pytest.importorskip("ml_dtypes")


def _bf16_values(*shapes):
    rng = np.random.default_rng(0)
    return [tinyllm.tensor(rng.standard_normal(s).astype(np.float32)).to(dtype="bfloat16")
            for s in shapes]  # fmt: skip


def test_an_op_chain_in_bfloat16_has_bfloat16_gradients_close_to_float32():
    inputs = _bf16_values((4, 8), (5, 8), (5,))
    grads = {}
    for dtype in ("bfloat16", "float32"):
        x, w, b = (t.to(dtype=dtype).detach().requires_grad_() for t in inputs)
        y = F.linear(x, w, b)
        loss = (F.gelu(y) * y).sum() + F.softmax(y @ y.t(), -1).sum()
        loss = loss + F.layer_norm(y, (5,)).pow(2).mean()
        assert loss.dtype == dtype and loss.grad_fn is not None
        loss.backward()
        assert all(t.grad.dtype == dtype for t in (x, w, b))
        grads[dtype] = [t.grad.numpy().astype(np.float64) for t in (x, w, b)]
    for low, ref in zip(grads["bfloat16"], grads["float32"]):
        assert np.abs(low - ref).max() <= 1e-2 * np.abs(ref).max()


@pytest.mark.parametrize("arch", ["llama", "gpt"])
def test_a_model_trains_in_bfloat16(arch):
    idx = np.random.default_rng(0).integers(0, 32, (2, 8))
    config = ModelConfig(arch=arch, vocab_size=32, d_model=32, n_layer=1, n_head=2,
                         block_size=8)  # fmt: skip
    grads, losses = {}, []
    for dtype in ("bfloat16", "float32"):
        tinyllm.manual_seed(0)
        model = build_model(config).to(dtype="bfloat16").to(dtype=dtype)  # same start values
        loss = F.cross_entropy(model(tinyllm.tensor(idx)).reshape(-1, 32),
                               tinyllm.tensor(idx.reshape(-1)))  # fmt: skip
        loss.backward()
        grads[dtype] = {n: p.grad for n, p in model.named_parameters()}
        if dtype == "bfloat16":
            opt = tinyllm.optim.AdamW(model.parameters(), lr=1e-2)
            for _ in range(20):  # a fixed batch: the loss must fall
                loss = F.cross_entropy(model(tinyllm.tensor(idx)).reshape(-1, 32),
                                       tinyllm.tensor(idx.reshape(-1)))  # fmt: skip
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.item()))
            assert all(p.dtype == "bfloat16" for p in model.parameters())
    largest = max(np.linalg.norm(g.numpy().astype(np.float64)) for g in grads["float32"].values())
    for name, ref in grads["float32"].items():
        low = grads["bfloat16"][name]
        assert low.dtype == "bfloat16", name
        low, ref = low.numpy().astype(np.float64), ref.numpy().astype(np.float64)
        # the floor: k_proj.bias's gradient is 0 in exact arithmetic (the softmax over keys
        # ignores a shift shared by all of them), so only rounding noise is compared there
        assert np.linalg.norm(low - ref) <= 3e-2 * np.linalg.norm(ref) + 1e-4 * largest, name
    assert losses[-1] < 0.5 * losses[0]
