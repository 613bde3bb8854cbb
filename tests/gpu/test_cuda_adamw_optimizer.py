"""AdamW.step on device="cuda" (the CuPy stand-in): one multi-tensor launch per group."""

import numpy as np

import tinyllm
from tinyllm import backend
from tinyllm.kernels import dispatch
from tinyllm.models import ModelConfig, build_model
from tinyllm.optim import AdamW

TINY = dict(vocab_size=11, d_model=8, n_layer=2, n_head=2, block_size=8)


def _params(device):
    tinyllm.manual_seed(0)
    model = build_model(ModelConfig(arch="llama", **TINY))
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(3)]
    for p in params:
        p.data = backend.to_device(p.data, device)
    return params, grads


def test_adamw_on_cuda_is_one_launch_per_group_and_matches_cpu(counters):
    results = []
    for device in ("cpu", "cuda"):
        params, grads = _params(device)
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        opt = AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                    lr=1e-2, betas=(0.9, 0.95))  # fmt: skip
        for k, step_grads in enumerate(grads):
            for p, g in zip(params, step_grads):
                p.grad = tinyllm.Tensor(backend.to_device(g, device))
            counters.reset()
            opt.step()
            if device == "cuda":
                assert counters.launches == {"adamw_multi_f32": 2}, counters.launches
                assert dispatch.last_tier("adamw_step_multi") == "cuda"
                if k:  # after the first step (state created, tables cached): no host sync
                    assert counters.n_syncs == 0, counters.report()
        results.append([backend.to_numpy(p.data) for p in params])
    for cpu, gpu in zip(*results):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-6)
