"""The MoE layer against a naive per-token loop, its gradients by finite differences,
capacity dropping through the residual, the aux losses, and Soft MoE's weights."""

import numpy as np
import pytest

import tinyllm
from tests.moe._fd import check_grads
from tinyllm.nn.moe import MOE_ROUTERS, MoE, SoftMoE

C, E, V = 6, 4, 30


def _np_expert(expert, x):
    w1, w2, w3 = (expert.w1.weight.data, expert.w2.weight.data, expert.w3.weight.data)
    a = x @ w1.T
    return ((a / (1 + np.exp(-a))) * (x @ w3.T)) @ w2.T


def _naive(moe, x, ids):
    """Token by token: sum over the token's kept (expert, gate) pairs, plus shared experts."""
    flat = x.data.reshape(-1, C)
    routing = moe.route(tinyllm.tensor(flat), ids)
    out = np.zeros_like(flat)
    if routing.expert_index is None:  # expert choice: loop over the experts' picks
        ti, w, counts = routing.rows()
        starts = np.concatenate([[0], np.cumsum(counts)])
        for e in range(E):
            for m in range(starts[e], starts[e + 1]):
                out[ti[m]] += w.data[m] * _np_expert(moe.experts[e], flat[ti[m]])
    else:
        for n in range(flat.shape[0]):
            for j, e in enumerate(routing.expert_index[n]):
                if e >= 0:
                    out[n] += routing.gates.data[n, j] * _np_expert(moe.experts[e], flat[n])
    if moe.shared_experts is not None:
        out += _np_expert(moe.shared_experts, flat)
    return out.reshape(x.shape)


def _moe(router="softmax_topk", **kw):
    tinyllm.manual_seed(0)
    kw.setdefault("expert_hidden", 5)
    return MoE(C, E, 2, router=router, vocab_size=V, **kw).to(dtype="float64")


def _inputs(seed=0, shape=(2, 5)):
    rng = np.random.default_rng(seed)
    x = tinyllm.tensor(rng.standard_normal(shape + (C,)), requires_grad=True)
    return x, rng.integers(0, V, shape)


@pytest.mark.parametrize("router", MOE_ROUTERS)
@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_layer_equals_the_per_token_loop(router, capacity_factor):
    moe = _moe(router, capacity_factor=capacity_factor, num_shared_experts=1)
    moe.eval()  # no noise, no bias update: the reference re-routes the same way
    x, ids = _inputs()
    y = moe(x, ids)
    np.testing.assert_allclose(y.data, _naive(moe, x, ids), rtol=1e-12, atol=1e-12)


def test_dropped_tokens_get_zero_and_pass_through_the_residual():
    moe = _moe(capacity_factor=0.25)  # capacity ceil(0.25 * 10 * 2 / 4) = 2 slots per expert
    moe.eval()
    x, ids = _inputs()
    routing = moe.route(tinyllm.tensor(x.data.reshape(-1, C)))
    dropped = (routing.expert_index < 0).all(axis=1)
    assert dropped.sum() >= 1  # some tokens lost every slot
    assert np.bincount(routing.expert_index[routing.expert_index >= 0], minlength=E).max() <= 2
    y = (x + moe(x)).data.reshape(-1, C)  # the block's residual
    np.testing.assert_array_equal(y[dropped], x.data.reshape(-1, C)[dropped])


@pytest.mark.parametrize("router", ["softmax_topk", "aux_free", "expert_choice", "hash"])
def test_layer_gradients_match_finite_differences(router):
    moe = _moe(router, capacity_factor=None if router == "expert_choice" else 1.0,
               num_shared_experts=1, z_loss_coef=0.1)  # fmt: skip
    moe.eval()
    x, ids = _inputs(shape=(1, 6))
    v = tinyllm.tensor(np.random.default_rng(1).standard_normal(x.shape))

    def loss():
        y = (moe(x, ids) * v).sum()
        return y if moe.aux_loss is None else y + moe.aux_loss

    params = [x] + [p for _, p in moe.named_parameters()]
    check_grads(loss, params, max_per_tensor=6)


def test_aux_loss_is_the_coefficients_times_the_closed_forms():
    moe = _moe(aux_loss_coef=0.5, z_loss_coef=0.25)
    x, _ = _inputs()
    moe(x)
    flat = x.data.reshape(-1, C)
    logits = flat @ moe.gate.weight.data.T
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    idx = np.argsort(-logits, 1)[:, :2]
    f = np.bincount(idx.reshape(-1), minlength=E) / idx.size
    switch = E * np.sum(f * p.mean(0))
    z = np.mean(np.log(np.exp(logits).sum(1)) ** 2)
    assert float(moe.aux_loss.data) == pytest.approx(0.5 * switch + 0.25 * z, rel=1e-12)
    assert moe.last_load.tolist() == np.bincount(idx.reshape(-1), minlength=E).tolist()


def test_aux_free_layer_moves_its_bias_in_training_only():
    moe = _moe("aux_free", bias_update_rate=0.01)
    x, _ = _inputs()
    moe.eval()
    moe(x)
    np.testing.assert_array_equal(moe.gate.e_score_correction_bias.data, 0.0)
    moe.train()
    moe(x)
    load = moe.last_load
    expected = 0.01 * np.sign(load.mean() - load)
    np.testing.assert_allclose(moe.gate.e_score_correction_bias.data, expected, atol=1e-7)


def test_mixtral_parameter_names():
    names = {n for n, _ in _moe(num_shared_experts=2).named_parameters()}
    assert {"gate.weight", "experts.0.w1.weight", "experts.3.w2.weight", "experts.1.w3.weight",
            "shared_experts.w1.weight"} <= names  # fmt: skip


# ---------------------------------------------------------------- Soft MoE
def _soft():
    tinyllm.manual_seed(0)
    return SoftMoE(C, num_experts=3, slots_per_expert=2, expert_hidden=5).to(dtype="float64")


def test_soft_moe_dispatch_sums_to_one_over_tokens_and_combine_over_slots():
    moe = _soft()
    x, _ = _inputs(shape=(2, 7))
    D, Cw = moe.weights(x)
    np.testing.assert_allclose(D.data.sum(axis=1), 1.0, atol=1e-14)  # each slot: over T
    np.testing.assert_allclose(Cw.data.sum(axis=2), 1.0, atol=1e-14)  # each token: over slots


def test_soft_moe_equals_the_formula_by_loops():
    moe = _soft()
    x, _ = _inputs(shape=(2, 7))
    y = moe(x).data
    for b in range(2):
        logits = x.data[b] @ moe.phi.data  # [T, E S]
        D = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
        Cw = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        slots = D.T @ x.data[b]
        outs = np.concatenate([_np_expert(moe.experts[e], slots[2 * e : 2 * e + 2])
                               for e in range(3)])  # fmt: skip
        np.testing.assert_allclose(y[b], Cw @ outs, rtol=1e-12, atol=1e-12)


def test_soft_moe_gradients_match_finite_differences():
    moe = _soft()
    x, _ = _inputs(shape=(2, 4))
    v = tinyllm.tensor(np.random.default_rng(1).standard_normal(x.shape))
    check_grads(lambda: (moe(x) * v).sum(), [x] + [p for _, p in moe.named_parameters()],
                max_per_tensor=6)  # fmt: skip


def test_layer_errors_are_clear():
    with pytest.raises(ValueError, match="MoE: router must be one of"):
        MoE(C, E, 2, router="nope")
    with pytest.raises(ValueError, match="MoE: router='hash' needs vocab_size"):
        MoE(C, E, 2, router="hash")
    with pytest.raises(ValueError, match=r"MoE: x must be \[..., 6\], got \(2, 5\)"):
        _moe()(tinyllm.randn(2, 5))
    with pytest.raises(ValueError, match="SoftMoE: x must be"):
        _soft()(tinyllm.randn(4, C))
