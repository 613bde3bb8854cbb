"""MoE on device="cuda" (the strict CuPy stand-in of tests/cupy_standin) against NumPy: every
router's layer forward and backward, the balancing losses, the aux-free bias update, and a
``tinyllm train`` step of an MoE Llama.

The stand-in computes with NumPy underneath, in the same dtype, so the layer (float64) agrees
with the CPU to rounding: only the scatter-add differs in summation order (``add.at`` on the
device, sorted ``add.reduceat`` on the CPU), a few ulps. The train step runs the CUDA kernels
(emulated on the CPU) in float32 against the CPU kernels: different kernels, float32 rounding.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm
from tinyllm import backend
from tinyllm.nn.moe import MoE, SoftMoE
from tinyllm.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cupy_standin

import cupy_standin  # noqa: E402

standin = cupy_standin.fixture()  # the stand-in as ``cupy`` for this module
C, E, VOCAB = 8, 4, 13
LAYERS = {
    "mixtral": dict(router="softmax_topk"),
    "topk-softmax": dict(router="topk_softmax", z_loss_coef=1e-2),
    "noisy": dict(router="noisy_topk", seed=3),  # a private host stream: the same eps on both
    "aux-free": dict(router="aux_free", bias_update_rate=0.1),
    "hash": dict(router="hash", vocab_size=VOCAB, aux_loss_coef=0.0),
    "expert-choice": dict(router="expert_choice", capacity_factor=1.5),
    "capacity+shared": dict(
        router="softmax_topk", capacity_factor=0.75, num_shared_experts=1, z_loss_coef=1e-2
    ),  # fmt: skip
}


def _run(kw, device):
    """(y, aux loss, load, x.grad, {name: grad}, buffers) of one training forward/backward."""
    tinyllm.manual_seed(0)
    layer = MoE(C, E, 2, 12, dtype=np.float64, **kw).to(device)
    layer.train()
    rng = np.random.default_rng(1)
    x = tinyllm.tensor(rng.standard_normal((2, 5, C)), device=device, requires_grad=True)
    ids = tinyllm.tensor(rng.integers(0, VOCAB, (2, 5)), device=device)
    v = tinyllm.tensor(rng.standard_normal((2, 5, C)), device=device)
    y = layer(x, token_ids=ids)
    loss = (y * v).sum()
    if layer.aux_loss is not None:
        loss = loss + layer.aux_loss
    loss.backward()
    aux = None if layer.aux_loss is None else backend.to_numpy(layer.aux_loss.data)
    grads = {n: backend.to_numpy(p.grad.data) for n, p in layer.named_parameters()
             if p.grad is not None}  # fmt: skip
    buffers = {n: backend.to_numpy(b.data) for n, b in layer.named_buffers()}
    return (
        backend.to_numpy(y.data),
        aux,
        layer.last_load,
        backend.to_numpy(x.grad.data),
        grads,
        buffers,
    )


@pytest.mark.parametrize("name", list(LAYERS))
def test_moe_layer_forward_backward_on_the_device_equals_numpy(name):
    cpu, dev = _run(LAYERS[name], "cpu"), _run(LAYERS[name], "cuda")
    tol = dict(rtol=1e-12, atol=1e-14)  # float64, summation order only (module doc)
    np.testing.assert_allclose(dev[0], cpu[0], **tol)
    if cpu[1] is None:
        assert dev[1] is None
    else:
        np.testing.assert_allclose(dev[1], cpu[1], **tol)
    assert isinstance(dev[2], np.ndarray) and dev[2].tolist() == cpu[2].tolist()  # host load
    np.testing.assert_allclose(dev[3], cpu[3], **tol)
    assert dev[4].keys() == cpu[4].keys() and cpu[4]
    for k in cpu[4]:
        np.testing.assert_allclose(dev[4][k], cpu[4][k], err_msg=k, **tol)
    assert dev[5].keys() == cpu[5].keys()
    for k in cpu[5]:  # the aux-free bias moved by the same load, the hash table unchanged
        np.testing.assert_array_equal(dev[5][k], cpu[5][k], err_msg=k)
    if name == "aux-free":
        assert np.abs(cpu[5]["gate.e_score_correction_bias"]).max() > 0


def test_soft_moe_on_the_device_equals_numpy():
    out = []
    for device in ("cpu", "cuda"):
        tinyllm.manual_seed(0)
        layer = SoftMoE(C, 3, 2, 12, dtype=np.float64).to(device)
        x = tinyllm.tensor(np.random.default_rng(2).standard_normal((2, 5, C)), device=device,
                           requires_grad=True)  # fmt: skip
        y = layer(x)
        (y * y).sum().backward()
        out.append([backend.to_numpy(t.data) for t in (y, x.grad, layer.phi.grad)])
    for a, b in zip(*out):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@cupy_standin.needs_compiler()
def test_moe_llama_train_steps_on_the_device_equal_numpy(tmp_path):
    """Three optimizer steps of an MoE Llama (aux-free selection bias, shared expert,
    capacity): the logged losses on the device equal the CPU's to float32 rounding."""
    logs = {}
    for device in ("cpu", "cuda"):
        config = TrainConfig(
            d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=2, steps=3, lr=3e-3,
            warmup=1, eval_interval=3, eval_batches=1, log_interval=1, checkpoint_interval=100,
            out_dir=str(tmp_path / device), name="moe", sample_tokens=0, device=device,
            moe_experts=4, moe_top_k=2, moe_expert_hidden=16, moe_router="aux_free",
            moe_shared_experts=1, moe_capacity_factor=1.5,
        )  # fmt: skip
        result = train(config, progress=False, echo=lambda *a: None)
        lines = (result.run_dir / "log.jsonl").read_text().splitlines()
        logs[device] = [json.loads(x) for x in lines]
    for a, b in zip(logs["cpu"], logs["cuda"], strict=True):
        assert a.get("expert_load") == b.get("expert_load")  # same routing on both
        for key in ("loss", "grad_norm", "val_bits_per_byte"):
            if key in a:
                # float32 end to end, CUDA kernels against CPU kernels: ~1e-6 relative per op
                assert b[key] == pytest.approx(a[key], rel=1e-4), (key, a, b)


@pytest.mark.parametrize("router", ["aux_free", "hash"])
def test_cached_moe_decoding_on_the_device_equals_numpy(router):
    """The Decoder's MoE FFN on device arrays: the logits of the CPU Decoder (float64; the
    scatter-add's summation order differs, module doc), one host read of the expert counts per
    layer and token."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_moe_decode import moe_llama

    from tinyllm.models.decoder import Decoder

    idx = np.random.default_rng(3).integers(0, 11, (2, 6))
    out = {}
    for device in ("cpu", "cuda"):
        model = moe_llama(router=router, vocab_size=11, num_shared_experts=1).to(device)
        decoder = Decoder(model, batch_size=2, max_len=8)
        first = decoder.prefill(backend.to_device(idx[:, :3], device))
        rest = [decoder.step(backend.to_device(idx[:, t], device)) for t in range(3, 6)]
        out[device] = [backend.to_numpy(a) for a in [first, *rest]]
        assert type(first).__module__.startswith("cupy_standin" if device == "cuda" else "numpy")
    for a, b in zip(out["cpu"], out["cuda"]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
