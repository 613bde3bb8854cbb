"""kNN memory (Memorizing Transformer) in tinyllm/nn/long_context.py: the memory returns
the top-k stored keys by inner product (brute force in NumPy as the oracle) and drops the
oldest past its capacity; the layer equals the wrapped attention with an empty memory, and
with a full retrieval (k >= stored) its output is the gated mix of local attention and dense
softmax attention over the stored keys (NumPy); gradients reach the gate; memory is per
document (clear)."""

import numpy as np
import pytest

import tinyllm
from tinyllm.models import Llama, ModelConfig
from tinyllm.nn.long_context import KNNMemory, attach_knn_memory


def test_search_returns_the_top_k_by_inner_product_and_fifo_capacity():
    rng = np.random.default_rng(0)
    mem = KNNMemory(capacity=20)
    k1, v1 = rng.standard_normal((2, 3, 8, 4)), rng.standard_normal((2, 3, 8, 5))
    k2, v2 = rng.standard_normal((2, 3, 9, 4)), rng.standard_normal((2, 3, 9, 5))
    mem.add(k1, v1)
    mem.add(k2, v2)
    assert len(mem) == 17
    q = rng.standard_normal((2, 3, 6, 4))
    keys, values = mem.search(q, 5)
    allk, allv = np.concatenate([k1, k2], 2), np.concatenate([v1, v2], 2)
    for b in range(2):
        for h in range(3):
            for t in range(6):
                best = np.argsort(-(allk[b, h] @ q[b, h, t]), kind="stable")[:5]
                np.testing.assert_allclose(keys[b, h, t], allk[b, h, best], rtol=1e-6)
                np.testing.assert_allclose(values[b, h, t], allv[b, h, best], rtol=1e-6)
    mem.add(k1, v1)  # 25 > 20: the oldest 5 go
    assert len(mem) == 20
    np.testing.assert_array_equal(mem.keys[:, :, -8:], k1)
    np.testing.assert_array_equal(mem.keys[:, :, :3], k1[:, :, 5:])  # 3 of k1, then k2
    with pytest.raises(ValueError, match="KNNMemory.add: the memory holds"):
        mem.add(k1[:1], v1[:1])
    mem.clear()
    with pytest.raises(ValueError, match="the memory is empty"):
        mem.search(q, 2)


def _model():
    tinyllm.manual_seed(0)
    cfg = ModelConfig(arch="llama", vocab_size=30, d_model=16, n_layer=2, n_head=2, block_size=8)
    return Llama(cfg)


def test_layer_is_the_gated_mix_of_local_and_memory_attention():
    from tinyllm.nn import Identity

    model = _model()
    rng = np.random.default_rng(1)
    x = tinyllm.tensor(rng.standard_normal((2, 6, 16)).astype(np.float32))
    attn = model.blocks[1].attn
    plain = attn(x).data
    layer = attach_knn_memory(model, 1, topk=100)  # k >= stored: every memory is retrieved
    np.testing.assert_array_equal(layer(x).data, plain)  # empty memory: the attention itself
    assert len(layer.memory) == 6
    attn.o_proj = Identity()  # read the mixed heads [B, T, H*D] themselves
    y = tinyllm.tensor(rng.standard_normal((2, 6, 16)).astype(np.float32))
    layer.use_memory = False
    local = layer(y).data.astype(np.float64)  # the wrapped attention's heads
    layer.use_memory = True
    got = layer(y).data.astype(np.float64)
    # NumPy: dense softmax attention of y's queries (before RoPE) over x's keys and values
    B, T, H, D = 2, 6, 2, 8

    def heads(z, name):
        w = getattr(attn, name).weight.data.astype(np.float64)
        return (z.data.astype(np.float64) @ w.T).reshape(B, T, H, D).transpose(0, 2, 1, 3)

    s = heads(y, "q_proj") @ heads(x, "k_proj").transpose(0, 1, 3, 2) / np.sqrt(D)
    p = np.exp(s - s.max(-1, keepdims=True))
    mem = ((p / p.sum(-1, keepdims=True)) @ heads(x, "v_proj")).transpose(0, 2, 1, 3)
    g = np.repeat(1 / (1 + np.exp(-layer.gate.data.astype(np.float64))), D)  # [H*D]
    want = g * mem.reshape(B, T, H * D) + (1 - g) * local
    # float32 layer against float64 NumPy, O(1) values: 1e-5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gate_gets_a_gradient_and_memory_is_per_document():
    model = _model()
    layer = attach_knn_memory(model, 0, topk=4)
    idx = tinyllm.tensor(np.random.default_rng(2).integers(0, 30, (2, 8)))
    model(idx)
    model(idx).sum().backward()
    assert layer.gate.grad is not None and np.abs(layer.gate.grad.data).max() > 0
    assert len(layer.memory) == 16
    layer.memory.clear()
    assert len(layer.memory) == 0
    assert attach_knn_memory(model, 0) is layer  # attaching twice keeps the one layer
