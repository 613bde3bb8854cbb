"""Gradient accumulation: k micro-batches, each loss divided by k, then one optimizer step,
equal the step on the k-times larger batch (float64), for SGD, AdamW, Lion and Adafactor.
(SGD checks the 1/k scaling too: Lion, and nearly AdamW and Adafactor, ignore a gradient's
scale.)"""

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import nn
from tinyllm.optim import SGD, Adafactor, AdamW, Lion


def _models():
    """Two float64 copies of one small MLP."""
    a = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    b = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    for pa, pb in zip(a.parameters(), b.parameters()):
        pa.data = pa.data.astype(np.float64)
        pb.data = pa.data.copy()
    return a, b


@pytest.mark.parametrize(
    "make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: AdamW(ps, lr=1e-2), lambda ps: Lion(ps, lr=1e-3, weight_decay=0.1),
             lambda ps: Adafactor(ps, lr=1e-2)],
    ids=["sgd", "adamw", "lion", "adafactor"],
)  # fmt: skip
def test_k_micro_batches_equal_one_large_batch(make):
    rng = np.random.default_rng(0)
    k, b = 4, 3
    x = rng.standard_normal((k * b, 5))
    y = rng.integers(0, 3, k * b)
    big, small = _models()
    opt_big, opt_small = make(list(big.parameters())), make(list(small.parameters()))
    for _ in range(3):
        opt_big.zero_grad()
        F.cross_entropy(big(tinyllm.tensor(x)), tinyllm.tensor(y)).backward()
        opt_big.step()
        opt_small.zero_grad()
        for i in range(k):  # equal-sized micro-batches: mean of means = the batch mean
            sl = slice(i * b, (i + 1) * b)
            loss = F.cross_entropy(small(tinyllm.tensor(x[sl])), tinyllm.tensor(y[sl])) / k
            loss.backward()  # gradients accumulate into .grad
        opt_small.step()
    for pb, ps in zip(big.parameters(), small.parameters()):
        # float64: the accumulated sum differs from the batch sum by reassociation only;
        # Lion's sign() can flip only where c is ~1e-16, which these data do not hit
        np.testing.assert_allclose(ps.data, pb.data, rtol=1e-12, atol=1e-14)
