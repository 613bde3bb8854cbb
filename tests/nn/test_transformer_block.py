"""``TransformerBlock``: pre-LN and post-LN equal their definitions composed from the
submodules; cached decoding through a block; whole-block float64 gradcheck; a torch oracle
(forward and every gradient) for a Llama-style pre-LN block and a GPT-style post-LN block."""

import numpy as np
import pytest

import tinyllm
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.nn.transformer import TransformerBlock, make_norm


def _x(B, T, C, seed=0):
    return tinyllm.tensor(np.random.default_rng(seed).standard_normal((B, T, C)), dtype="float64")


def _np(t):
    return t.detach().numpy()


def _randomize_norms(block, seed=0):
    rng = np.random.default_rng(seed)
    state = {k: v.numpy() for k, v in block.state_dict().items()}
    for k in state:
        if k.startswith(("ln_", "attn.kv_a_layernorm")):
            state[k] = state[k] + 0.2 * rng.standard_normal(state[k].shape)
    block.load_state_dict(state)
    return block


@pytest.mark.parametrize("placement", ["pre", "post"])
@pytest.mark.parametrize("norm, ffn", [("layernorm", "mlp"), ("rmsnorm", "swiglu")])
def test_block_computes_its_definition(placement, norm, ffn):
    tinyllm.manual_seed(0)
    block = TransformerBlock(16, 4, 2, norm=norm, norm_placement=placement, ffn=ffn,
                             positional="rope").double()  # fmt: skip
    _randomize_norms(block)
    x = _x(2, 5, 16)
    a, m, n1, n2 = block.attn, block.mlp, block.ln_1, block.ln_2
    if placement == "pre":
        h = x + a(n1(x))
        ref = h + m(n2(h))
    else:
        h = n1(x + a(x))
        ref = n2(h + m(h))
    np.testing.assert_array_equal(_np(block(x)), _np(ref))


def test_pre_and_post_differ_and_names():
    tinyllm.manual_seed(1)
    pre = TransformerBlock(8, 2, norm_placement="pre").double()
    post = TransformerBlock(8, 2, norm_placement="post").double()
    post.load_state_dict(pre.state_dict())
    x = _x(1, 3, 8)
    assert not np.allclose(_np(pre(x)), _np(post(x)))
    # post-LN output rows are normalized (LayerNorm with weight 1, bias 0)
    np.testing.assert_allclose(_np(post(x)).mean(-1), 0, atol=1e-12)
    assert list(pre.state_dict()) == [
        "ln_1.weight", "ln_1.bias", "attn.q_proj.weight", "attn.k_proj.weight",
        "attn.v_proj.weight", "attn.o_proj.weight", "ln_2.weight", "ln_2.bias",
        "mlp.c_fc.weight", "mlp.c_proj.weight"]  # fmt: skip


@pytest.mark.parametrize("attention", ["standard", "mla"])
def test_block_cached_decoding(attention):
    tinyllm.manual_seed(2)
    kwargs = {"positional": "rope", "attention": attention}
    if attention == "mla":
        kwargs["attn_kwargs"] = {"kv_lora_rank": 6, "q_lora_rank": 5}
    block = TransformerBlock(16, 4, norm="rmsnorm", ffn="swiglu", **kwargs).double()
    x = _x(2, 6, 16, seed=3)
    with tinyllm.no_grad():
        full = block(x)
        cache = block.new_cache()
        outs = [block(x[:, :2], cache=cache)] + [
            block(x[:, t : t + 1], cache=cache) for t in range(2, 6)
        ]
    np.testing.assert_allclose(_np(tinyllm.cat(outs, dim=1)), _np(full), atol=1e-12)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_whole_block_gradcheck(placement):
    tinyllm.manual_seed(3)
    block = TransformerBlock(8, 4, 2, d_ff=12, norm="rmsnorm" if placement == "pre" else "layernorm",
                             norm_placement=placement, ffn="swiglu" if placement == "pre" else "mlp",
                             positional="rope", bias=placement == "post").double()  # fmt: skip
    _randomize_norms(block, seed=4)
    x = _x(2, 4, 8, seed=5)
    rows = gradcheck_parameters(block, lambda: block(x), atol=1e-7, rtol=1e-5)
    assert all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]
    assert len(rows) == len(list(block.parameters()))


def test_block_bad_configs():
    with pytest.raises(ValueError, match="d_model=30 must be divisible by n_heads=4"):
        TransformerBlock(30, 4)
    with pytest.raises(ValueError, match="n_heads=4 must be divisible by n_kv_heads=3"):
        TransformerBlock(32, 4, 3)
    with pytest.raises(ValueError, match="norm_placement must be 'pre' or 'post'"):
        TransformerBlock(32, 4, norm_placement="sandwich")
    with pytest.raises(ValueError, match="norm must be 'layernorm' or 'rmsnorm'"):
        make_norm("batchnorm", 8)
    with pytest.raises(ValueError, match="ffn must be one of"):
        TransformerBlock(32, 4, ffn="moe")
    with pytest.raises(ValueError, match="attention='mla'"):
        TransformerBlock(32, 4, 2, attention="mla")


# ---------------------------------------------------------------- torch oracle
def _torch_block(torch, state, x, *, placement, norm, ffn, n_heads, n_kv_heads, rope):
    """The same block written with torch ops (HF Llama / GPT-2 conventions)."""
    tF = torch.nn.functional
    W = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    C = x.shape[-1]
    D = C // n_heads

    def norm_fn(prefix, h):
        if norm == "rmsnorm":
            return tF.rms_norm(h, (C,), W[f"{prefix}.weight"], eps=1e-5)
        return tF.layer_norm(h, (C,), W[f"{prefix}.weight"], W.get(f"{prefix}.bias"), eps=1e-5)

    def lin(prefix, h):
        return tF.linear(h, W[f"{prefix}.weight"], W.get(f"{prefix}.bias"))

    def rotate(t):  # half layout, positions 0..T-1
        T = t.shape[-2]
        theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * theta
        cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
        rot = torch.cat([-t[..., D // 2 :], t[..., : D // 2]], -1)
        return t * cos + rot * sin

    def attn(h):
        B, T, _ = h.shape
        q = lin("attn.q_proj", h).view(B, T, n_heads, D).transpose(1, 2)
        k = lin("attn.k_proj", h).view(B, T, n_kv_heads, D).transpose(1, 2)
        v = lin("attn.v_proj", h).view(B, T, n_kv_heads, D).transpose(1, 2)
        if rope:
            q, k = rotate(q), rotate(k)
        o = tF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return lin("attn.o_proj", o.transpose(1, 2).reshape(B, T, C))

    def mlp(h):
        if ffn == "swiglu":
            gate, up = lin("mlp.gate_up_proj", h).chunk(2, dim=-1)
            return lin("mlp.down_proj", tF.silu(gate) * up)
        return lin("mlp.c_proj", tF.gelu(lin("mlp.c_fc", h)))

    if placement == "pre":
        h = x + attn(norm_fn("ln_1", x))
        y = h + mlp(norm_fn("ln_2", h))
    else:
        h = norm_fn("ln_1", x + attn(x))
        y = norm_fn("ln_2", h + mlp(h))
    return y, W


@pytest.mark.parametrize("config", [
    dict(placement="pre", norm="rmsnorm", ffn="swiglu", n_kv_heads=2, rope=True, bias=False),
    dict(placement="post", norm="layernorm", ffn="mlp", n_kv_heads=4, rope=False, bias=True),
])  # fmt: skip
def test_block_matches_torch_forward_and_gradients(config):
    torch = pytest.importorskip("torch")
    tinyllm.manual_seed(6)
    block = TransformerBlock(
        16, 4, config["n_kv_heads"], norm=config["norm"], norm_placement=config["placement"],
        ffn=config["ffn"], positional="rope" if config["rope"] else None, bias=config["bias"],
    ).double()  # fmt: skip
    _randomize_norms(block, seed=7)
    state = {k: v.numpy().copy() for k, v in block.state_dict().items()}
    x_np = np.random.default_rng(8).standard_normal((2, 6, 16))
    cot = np.random.default_rng(9).standard_normal((2, 6, 16))

    x = tinyllm.tensor(x_np, requires_grad=True)
    y = block(x)
    y.backward(tinyllm.tensor(cot))

    xt = torch.tensor(x_np, requires_grad=True)
    yt, W = _torch_block(
        torch, state, xt, n_heads=4, **{k: v for k, v in config.items() if k != "bias"}
    )
    yt.backward(torch.tensor(cot))

    np.testing.assert_allclose(_np(y), yt.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), atol=1e-10)
    for name, p in block.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), W[name].grad.numpy(), atol=1e-10, err_msg=name)
