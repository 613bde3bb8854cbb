"""Routers: gradients by finite differences in float64, the two top-k orders, V3's gates
independent of its bias and the bias update, capacity dropping, hash and expert choice."""

import numpy as np
import pytest

import tinyllm
from tests.moe._fd import check_grads
from tinyllm.nn.moe import (
    AuxFreeRouter,
    ExpertChoiceRouter,
    HashRouter,
    NoisyTopKRouter,
    TopKRouter,
    apply_capacity,
    expert_capacity,
)

N, C, E = 7, 5, 4


def _x(seed=0):
    return tinyllm.tensor(np.random.default_rng(seed).standard_normal((N, C)), requires_grad=True)


def _gate_loss(router, x, v, **kw):
    def loss():
        r = router(x, **kw)
        _, w, _ = r.rows()  # the gates of every kept slot, as the layer uses them
        return (w * tinyllm.tensor(v[: w.shape[0]])).sum()

    return loss


@pytest.mark.parametrize(
    "make",
    [
        lambda: TopKRouter(C, E, 2, "softmax_topk"),
        lambda: TopKRouter(C, E, 2, "softmax_topk", normalize=False),
        lambda: TopKRouter(C, E, 2, "topk_softmax"),
        lambda: TopKRouter(C, E, 1, "softmax_topk", normalize=False),
        lambda: AuxFreeRouter(C, E, 2),
        lambda: ExpertChoiceRouter(C, E, 2.0),
    ],
    ids=["mixtral", "unnormalized", "topk-softmax", "switch-top1", "v3", "expert-choice"],
)
def test_router_gradients_match_finite_differences(make):
    tinyllm.manual_seed(0)
    router = make().to(dtype="float64")
    x = _x()
    v = np.random.default_rng(1).standard_normal(64)
    check_grads(_gate_loss(router, x, v), [x, router.weight])


def test_noisy_router_gradients_with_fixed_noise_reach_the_noise_weights():
    tinyllm.manual_seed(0)
    router = NoisyTopKRouter(C, E, 2).to(dtype="float64")
    tinyllm.nn.init.normal_(router.w_noise.weight, 0.0, 0.5)
    noise = np.random.default_rng(2).standard_normal((N, E))
    x = _x()
    v = np.random.default_rng(1).standard_normal(64)
    check_grads(_gate_loss(router, x, v, noise=noise), [x, router.weight, router.w_noise.weight])
    assert np.abs(router.w_noise.weight.grad.data).max() > 0  # the noise scale is learned


def test_noise_is_off_in_eval():
    router = NoisyTopKRouter(C, E, 2).to(dtype="float64")
    tinyllm.nn.init.normal_(router.w_noise.weight, 0.0, 5.0)
    plain = TopKRouter(C, E, 2, "topk_softmax").to(dtype="float64")
    plain.weight.data[...] = router.weight.data
    x = _x()
    router.eval()
    a, b = router(x), plain(x)
    np.testing.assert_array_equal(a.expert_index, b.expert_index)
    np.testing.assert_allclose(a.gates.data, b.gates.data, rtol=0, atol=1e-15)


def test_mixtral_renormalized_gates_equal_topk_then_softmax():
    # exp(l_i) / sum_{j in top-k} exp(l_j) either way; unnormalized gates are the raw probs
    x = _x()
    a = TopKRouter(C, E, 2, "softmax_topk").to(dtype="float64")
    b = TopKRouter(C, E, 2, "topk_softmax").to(dtype="float64")
    b.weight.data[...] = a.weight.data
    ra, rb = a(x), b(x)
    np.testing.assert_array_equal(ra.expert_index, rb.expert_index)
    np.testing.assert_allclose(ra.gates.data, rb.gates.data, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ra.gates.data.sum(-1), 1.0, atol=1e-15)
    # the chosen experts are the argmax-k of the logits, by an independent full sort
    logits = x.data @ a.weight.data.T
    for n in range(N):
        assert set(ra.expert_index[n]) == set(np.argsort(logits[n])[-2:])


def test_v3_gate_values_do_not_depend_on_the_bias():
    router = AuxFreeRouter(C, E, 2).to(dtype="float64")
    x = _x()
    base = router(x)
    s = 1 / (1 + np.exp(-(x.data @ router.weight.data.T)))
    for seed in range(5):
        router.e_score_correction_bias.data[...] = np.random.default_rng(seed).normal(0, 2, E)
        r = router(x)
        # gates are the sigmoid scores of the chosen experts, normalized: no bias in them
        chosen = np.take_along_axis(s, r.expert_index, axis=1)
        np.testing.assert_allclose(r.gates.data, chosen / chosen.sum(1, keepdims=True), atol=1e-15)
        # and where the bias leaves the choice unchanged, the gate of each expert is unchanged
        for n in range(N):
            if set(r.expert_index[n]) == set(base.expert_index[n]):
                mine = dict(zip(r.expert_index[n], r.gates.data[n]))
                before = dict(zip(base.expert_index[n], base.gates.data[n]))
                assert all(abs(mine[e] - before[e]) <= 1e-15 for e in mine)
    # a large bias forces the choice and still leaves the gate formula bias-free
    router.e_score_correction_bias.data[...] = np.array([100.0, 100.0, 0.0, 0.0])
    r = router(x)
    assert (np.sort(r.expert_index, 1) == [0, 1]).all()


def test_v3_bias_moves_by_the_sign_of_the_load_error():
    router = AuxFreeRouter(C, E, 2, bias_update_rate=0.1)
    router.update_bias(np.array([10, 2, 4, 4]))  # mean 5
    np.testing.assert_allclose(router.e_score_correction_bias.data, [-0.1, 0.1, 0.1, 0.1])
    router.update_bias(np.array([5, 5, 5, 5]))  # balanced: sign 0, no move
    np.testing.assert_allclose(router.e_score_correction_bias.data, [-0.1, 0.1, 0.1, 0.1])


def test_capacity_drops_the_latest_slots_of_overloaded_experts():
    idx = np.array([[0, 1], [0, 2], [0, 1], [3, 0]])
    assert expert_capacity(4, 4, 2, 1.0) == 2
    kept = apply_capacity(idx, 4, 2)
    np.testing.assert_array_equal(kept, [[0, 1], [0, 2], [-1, 1], [3, -1]])
    np.testing.assert_array_equal(apply_capacity(idx, 4, 0), np.full_like(idx, -1))
    np.testing.assert_array_equal(apply_capacity(idx, 4, 8), idx)


def test_hash_router_is_a_fixed_table_with_unit_gates():
    r = HashRouter(50, E, seed=3)
    ids = np.array([1, 7, 1, 49, 7])
    out = r(tinyllm.randn(5, C), token_ids=ids)
    assert out.expert_index[:, 0].tolist() == r.table.data[ids].tolist()
    assert out.expert_index[0, 0] == out.expert_index[2, 0]
    np.testing.assert_array_equal(out.gates.data, 1.0)
    with pytest.raises(ValueError, match="HashRouter: token_ids are required"):
        r(tinyllm.randn(5, C))


def test_expert_choice_takes_each_experts_top_tokens():
    router = ExpertChoiceRouter(C, E, capacity_factor=2.0).to(dtype="float64")
    x = _x()
    ti, w, counts = router(x).rows()
    c = router.capacity(N)
    assert c == 4 and counts.tolist() == [c] * E
    logits = x.data @ router.weight.data.T
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for e in range(E):
        mine = ti[e * c : (e + 1) * c]
        assert set(mine) == set(np.argsort(-p[:, e])[:c])
        np.testing.assert_allclose(w.data[e * c : (e + 1) * c], p[mine, e], atol=1e-15)


def test_router_errors_are_clear():
    with pytest.raises(ValueError, match="TopKRouter: top_k=5 exceeds num_experts=4"):
        TopKRouter(C, 4, 5)
    with pytest.raises(ValueError, match=r"TopKRouter: x must be \[N, 5\], got \(2, 3\)"):
        TopKRouter(C, 4, 2)(tinyllm.randn(2, 3))
