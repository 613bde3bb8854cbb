"""Noisy top-k and resume: the router's noise comes from tinyllm's global generator, whose
state (``backend.get_rng_state``) every training checkpoint holds and every interrupted step
rolls back, so a noisy-top-k run stopped and resumed logs the losses and ends with the
weights of the run that never stopped."""

import json

import numpy as np
import pytest

import tinyllm
from tinyllm.io.checkpoint import load_checkpoint
from tinyllm.nn.moe import NoisyTopKRouter
from tinyllm.train import TrainConfig, train

QUIET = dict(progress=False, echo=lambda *a: None)


def _cfg(tmp_path, **kw):
    values = dict(
        d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=4, steps=8, lr=3e-3, warmup=2,
        eval_interval=4, eval_batches=1, log_interval=1, checkpoint_interval=4,
        out_dir=str(tmp_path), name="noisy", sample_tokens=0, moe_experts=4, moe_top_k=2,
        moe_expert_hidden=16, moe_router="noisy_topk",
    )  # fmt: skip
    values.update(kw)
    return TrainConfig(**values)


def _losses(run):
    lines = [json.loads(x) for x in (run.run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


def _weights(run):
    arrays, _ = load_checkpoint(run.run_dir / "checkpoint.safetensors")
    return {k: v for k, v in arrays.items() if k.startswith("model.")}


def _interrupt_after(monkeypatch, n: int) -> None:
    """Ctrl-C at the (n + 1)-th batch the loop draws."""
    import tinyllm.train.loop as loop

    calls, draw = {"n": 0}, loop.random_windows

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)

    monkeypatch.setattr(loop, "random_windows", interrupting)


@pytest.mark.parametrize(
    "grad_accum, draws", [(1, 4), (2, 9)], ids=["at-a-checkpoint", "mid-step"]
)  # fmt: skip
def test_noisy_topk_resume_equals_uninterrupted(tmp_path, monkeypatch, grad_accum, draws):
    """draws=9 with grad_accum 2: Ctrl-C at the second micro-batch of step 5, after the first
    one drew its noise; the step is rolled back and redone on resume."""
    config = dict(grad_accum=grad_accum)
    full = train(_cfg(tmp_path / "full", **config), **QUIET)
    part = _cfg(tmp_path / "part", **config)
    with monkeypatch.context() as m:
        _interrupt_after(m, draws)
        stopped = train(part, **QUIET)
    assert stopped.interrupted and stopped.step == 4
    resumed = train(part, resume=True, **QUIET)
    assert resumed.step == 8
    assert _losses(resumed) == _losses(full)  # bit for bit
    a, b = _weights(resumed), _weights(full)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # the noise mattered: the learned noise scale moved away from its zero init
    assert np.abs(a["model.model.layers.0.mlp.gate.w_noise.weight"]).max() > 0


def test_noise_follows_the_global_generator_and_a_seed_gives_a_private_stream():
    x = tinyllm.tensor(np.random.default_rng(0).standard_normal((6, 8)))
    router = NoisyTopKRouter(8, 4, 2).to(dtype="float64")
    tinyllm.nn.init.normal_(router.w_noise.weight, 0.0, 3.0)

    def gates(r):
        return r(x).gates.data.copy()

    tinyllm.manual_seed(5)
    first = gates(router)
    state = tinyllm.backend.get_rng_state()
    second = gates(router)
    assert not np.array_equal(first, second)  # fresh noise each forward
    tinyllm.backend.set_rng_state(state)
    np.testing.assert_array_equal(gates(router), second)  # the saved state replays it
    # the noise is exactly eps from the global generator: H = logits + eps * softplus(x W_n)
    tinyllm.manual_seed(5)
    eps = tinyllm.backend.generator("cpu").standard_normal((6, 4))
    fixed = router(x, noise=eps).gates.data
    np.testing.assert_array_equal(fixed, first)
    private = NoisyTopKRouter(8, 4, 2, seed=3).to(dtype="float64")
    private.load_state_dict(router.state_dict())
    tinyllm.manual_seed(5)
    a = gates(private)
    tinyllm.manual_seed(5)
    assert not np.array_equal(gates(private), a)  # its own stream, not the global one
