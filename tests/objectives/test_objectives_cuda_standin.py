"""The objectives' models and losses on device="cuda" (the CuPy stand-in, tests/cupy_standin;
no GPU needed): the masks built on the host reach the device, and loss and gradients equal
the CPU's."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm
from tinyllm.objectives.tasks import make_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

pytestmark = cupy_standin.needs_compiler()
standin = cupy_standin.fixture()


@pytest.mark.parametrize("objective", ["mlm", "prefixlm", "span"])
def test_task_loss_and_gradients_on_cuda_equal_cpu(objective):
    task = make_task(objective, 16, 12)
    rng = np.random.default_rng(0)
    batch = task.make_batch(rng.integers(0, 16, (2, task.raw_length)), rng)
    results = []
    for device in ("cpu", "cuda"):
        tinyllm.manual_seed(0)
        config = task.model_config(d_model=8, n_layer=1, n_head=2, ffn_hidden=16)
        model = task.build_model(config).double()
        model.to(device)
        loss = task.loss(model, batch, device)
        loss.backward()
        grads = [p.grad.cpu().numpy() for p in model.parameters()]
        results.append([loss.detach().cpu().numpy()] + grads)
    for a, b in zip(*results):  # float64 on both: the same arithmetic up to summation order
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
