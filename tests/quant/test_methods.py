"""GPTQ, AWQ, SmoothQuant, LLM.int8(), ZeroQuant: the identities and comparisons that pin
each method down (synthetic correlated, heteroscedastic inputs; and real activations of the
trained Llama in runs/quant_base when that run exists)."""

from pathlib import Path

import numpy as np
import pytest

from tinyllm.quant import awq, gptq, llm_int8, schemes, smoothquant, zeroquant

RUN = Path(__file__).resolve().parents[2] / "runs" / "quant_base"


def correlated_inputs(rng, n, K, outliers=0):
    A = rng.standard_normal((K, K)) * 0.3 + np.eye(K)
    X = rng.standard_normal((n, K)) @ A * np.exp(rng.standard_normal(K))
    if outliers:
        X[:, rng.choice(K, outliers, replace=False)] *= 20
    return X


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(0)
    X = correlated_inputs(rng, 1000, 96)
    W = (rng.standard_normal((40, 96)) * 0.05).astype(np.float32)
    acc = gptq.HessianAccumulator(96)
    acc.add_batch(X[:300])
    acc.add_batch(X[300:])
    return W, X, acc.H


def out_err(X, W, W_hat):
    return float(np.sum((X @ (W - W_hat).T) ** 2))


def test_hessian_accumulator_is_2_over_n_xtx(layer):
    _, X, H = layer
    np.testing.assert_allclose(H, 2.0 / len(X) * X.T @ X, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("g,act_order", [(None, False), (32, False), (None, True), (32, True)])
def test_gptq_blocksize_invariance_and_loss_identity(layer, g, act_order):
    W, X, H = layer
    runs = [gptq.gptq_quantize(W, H, 4, g, False, blocksize=b, act_order=act_order)
            for b in (128, 7, 1)]  # fmt: skip
    for q, _ in runs[1:]:
        np.testing.assert_array_equal(q.codes, runs[0][0].codes)
    q, info = runs[0]
    D = W.astype(np.float64) - q.dequantize(np.float64)
    expected = 0.5 * np.trace(D @ (H + info["damp"] * np.eye(96)) @ D.T)
    assert info["loss"] == pytest.approx(expected, rel=1e-4)
    rtn = schemes.quantize_weight(W, 4, "group" if g else "channel", g, symmetric=False)
    assert out_err(X, W, q.dequantize()) < out_err(X, W, rtn.dequantize())


@pytest.mark.parametrize("g", [None, 16])
def test_gptq_identity_hessian_is_round_to_nearest(g):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((8, 48)).astype(np.float32)
    q, _ = gptq.gptq_quantize(W, 3.0 * np.eye(48), 4, g, False)
    rtn = schemes.quantize_weight(W, 4, "group" if g else "channel", g, symmetric=False)
    np.testing.assert_array_equal(q.codes, rtn.codes)
    np.testing.assert_array_equal(q.scales, rtn.scales)


@pytest.mark.skipif(not (RUN / "checkpoint.safetensors").is_file(), reason="no runs/quant_base")
def test_gptq_beats_rtn_on_real_activations_of_the_trained_llama():
    from tinyllm.cli.sample_cmd import load_run
    from tinyllm.quant.model import _collect, _layer_stats

    model, config, *_ = load_run(RUN)
    data = np.frombuffer(b"def main():\n    return [x * 2 for x in range(10)]\n" * 6, np.uint8)
    batch = data[: config.seq_len].astype(np.int64)[None]
    names = ["q_proj", "down_proj"]
    block = model.blocks[1]
    layers = [block.attn.q_proj, block.mlp.down_proj]
    stats = [_layer_stats("awq", lin.in_features) for lin in layers]
    _collect(model, layers, [batch], lambda m, b: m(__import__("tinyllm").tensor(b)),
             [s[0] for s in stats], False)  # fmt: skip
    for name, lin, st in zip(names, layers, stats):
        X, _ = st[1]()
        W = lin.weight.detach().numpy()
        acc = gptq.HessianAccumulator(W.shape[1])
        acc.add_batch(X)
        q, _ = gptq.gptq_quantize(W, acc.H, 4, 64, False)
        rtn = schemes.quantize_weight(W, 4, "group", 64, symmetric=False)
        assert out_err(X, W, q.dequantize()) < out_err(X, W, rtn.dequantize()), name


def test_awq_alpha_zero_is_rtn_and_chosen_alpha_never_worse():
    rng = np.random.default_rng(2)
    X = correlated_inputs(rng, 400, 64, outliers=2)
    W = (rng.standard_normal((32, 64)) * 0.05).astype(np.float32)
    s, alpha, errors = awq.awq_scale_search(W, X, 4, 16, False)
    rtn = schemes.fake_quantize(W, 4, "group", 16, False)
    assert errors[0.0] == pytest.approx(np.mean((X @ W.T - X @ rtn.T) ** 2), rel=1e-9)
    assert errors[alpha] <= errors[0.0]
    assert errors[alpha] == min(errors.values())
    q0, s0, _ = awq.awq_quantize(W, X, 4, 16, False, clip=False, alphas=(0.0,))
    np.testing.assert_array_equal(s0, 1.0)
    np.testing.assert_array_equal(q0.dequantize(), rtn)
    # with outlier channels the search finds a real gain
    assert errors[alpha] < 0.9 * errors[0.0]


def test_awq_clip_never_worse_than_no_clip():
    rng = np.random.default_rng(3)
    X = correlated_inputs(rng, 300, 64)
    W = rng.standard_t(3, (16, 64)) * 0.05
    clipped = awq.awq_clip(W, X, 4, 16, False)
    e_clip = out_err(X, W, schemes.fake_quantize(clipped, 4, "group", 16, False))
    e_none = out_err(X, W, schemes.fake_quantize(W, 4, "group", 16, False))
    assert e_clip <= e_none * (1 + 1e-9)


def test_smoothquant_is_exact_before_quantization_and_balances():
    rng = np.random.default_rng(4)
    X = correlated_inputs(rng, 200, 32, outliers=2)
    W = rng.standard_normal((24, 32)) * 0.05
    for alpha in (0.0, 0.5, 0.85):
        s = smoothquant.smooth_scales(np.abs(X).max(0), W, alpha)
        np.testing.assert_allclose((X / s) @ smoothquant.smooth_weight(W, s).T, X @ W.T,
                                   rtol=1e-12, atol=1e-12)  # fmt: skip
    s = smoothquant.smooth_scales(np.abs(X).max(0), W, 0.5)
    a, m = np.abs(X).max(0), np.abs(W).max(0)
    np.testing.assert_allclose(np.abs(X / s).max(0), np.sqrt(a * m), rtol=1e-10)
    np.testing.assert_allclose(np.abs(W * s).max(0), np.sqrt(a * m), rtol=1e-10)

    # W8A8 per-tensor static error falls after smoothing
    def w8a8(Xs, Ws):
        xq = zeroquant.fake_quantize_tokens(Xs, np.abs(Xs).max())
        return xq @ schemes.fake_quantize(Ws, 8, "channel", None, True).T

    before = np.abs(w8a8(X, W) - X @ W.T).mean()
    after = np.abs(w8a8(X / s, W * s) - X @ W.T).mean()
    assert after < before


def naive_int8(x, W):
    """Vector-wise absmax INT8, written out: codes, integer matmul, rescale."""
    sx = np.abs(x).max(1, keepdims=True) / 127
    sw = np.abs(W).max(1, keepdims=True) / 127
    cx = np.clip(np.round(x / sx), -127, 127).astype(np.int64)
    cw = np.clip(np.round(W / sw), -127, 127).astype(np.int64)
    return (cx @ cw.T) * sx * sw.T


def test_llm_int8_without_outliers_is_plain_int8_and_threshold_zero_is_float():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 40)) * 0.5
    W = rng.standard_normal((12, 40)) * 0.1
    q = llm_int8.quantize_int8_rows(W)
    assert llm_int8.outlier_columns(x, np.inf).size == 0
    np.testing.assert_allclose(llm_int8.llm_int8_matmul(x, q, np.inf), naive_int8(x, W),
                               rtol=1e-5, atol=1e-7)  # fmt: skip
    np.testing.assert_allclose(llm_int8.llm_int8_matmul(x, q, 0.0), x @ q.dequantize(np.float64).T,
                               rtol=1e-12, atol=1e-12)  # fmt: skip


def test_llm_int8_decomposition_beats_plain_int8_with_outlier_features():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 128))
    x[:, [3, 70]] *= 15
    W = rng.standard_normal((32, 128)) * 0.1
    q = llm_int8.quantize_int8_rows(W)
    exact = x @ W.T
    err_mixed = np.abs(llm_int8.llm_int8_matmul(x, q, 6.0) - exact).mean()
    err_plain = np.abs(llm_int8.llm_int8_matmul(x, q, np.inf) - exact).mean()
    assert err_mixed < 0.5 * err_plain


def test_zeroquant_token_wise_beats_per_tensor_static():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((50, 64)) * np.exp(2 * rng.standard_normal((50, 1)))
    dyn = np.abs(zeroquant.fake_quantize_tokens(x) - x).mean()
    static = np.abs(zeroquant.fake_quantize_tokens(x, np.abs(x).max()) - x).mean()
    assert dyn < static
