"""The same GPT/Llama written the way a PyTorch user writes it, and its benchmark worker.

This file is standalone: it never imports tinyllm, so that the benchmark harness can run it
as a script (``python torch_reference.py SPEC_JSON``) in a child process whose PyTorch has
never shared a process with tinyllm. The model is idiomatic PyTorch eager: ``nn.RMSNorm`` /
``nn.LayerNorm``, ``F.scaled_dot_product_attention(is_causal=True)``, RoPE tables built once
as float32 buffers, ``torch.optim.AdamW`` with its defaults (lr aside), default thread count.
Parameter names equal tinyllm's, so tinyllm's initial weights load key for key from an
``.npz`` file written by the tinyllm side.

The worker's modes (``spec["mode"]``), each printing one JSON line on stdout:

- ``probe``: no torch; reports which modules are loaded (a test checks no tinyllm);
- ``check``: loads weights and a batch, writes the first step's loss and every gradient;
- ``train``: times forward + backward + AdamW steps;
- ``generate``: greedy decoding with a KV cache, batch 1; the tokens and ms per token;
- ``gemm``: the matrix products ``spec["gemms"]`` ([shape of A, shape of B] pairs, the step's
  products as tinyllm's worker lists them), timed back to back with ``torch.matmul(out=)``:
  PyTorch's BLAS on the same products as NumPy's in the tinyllm worker's ``gemm`` mode;
- ``encode``: a BERT sentence encoder (all-MiniLM-L6-v2: ``build_torch_bert``) with weights
  read by ``safetensors.numpy``, embedding padded token batches written by the parent
  (forward + mean pooling + L2 normalize under ``torch.inference_mode()``); sentences/s per
  repeat, and with ``spec["out"]`` the embeddings of every batch, for the agreement check.

``spec["prelude"]`` (optional) is Python run before anything else: ``tinyllm bench citizen``
uses it to import tinyllm first, to see whether that slows PyTorch down.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

import numpy as np


def build_torch_model(config: dict):
    """A torch.nn.Module with tinyllm's architecture and parameter names for ``config``
    (the fields of tinyllm's ``ModelConfig``, as a dict)."""
    import torch
    import torch.nn.functional as TF
    from torch import nn

    C, H, Hkv = config["d_model"], config["n_head"], config["n_kv_head"]
    D = C // H
    llama = config["arch"] == "llama"
    eps, bias = config["norm_eps"], config["bias"]

    def norm():
        return nn.RMSNorm(C, eps=eps) if llama else nn.LayerNorm(C, eps=eps, bias=bias)

    def rope(x, cos, sin):  # x [B, h, T, D], half-split layout; cos, sin [T, D/2]
        a, b = x[..., : D // 2], x[..., D // 2 :]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(C, H * D, bias=bias)
            self.k_proj = nn.Linear(C, Hkv * D, bias=bias)
            self.v_proj = nn.Linear(C, Hkv * D, bias=bias)
            self.o_proj = nn.Linear(H * D, C, bias=bias)

        def forward(self, x, cos=None, sin=None, cache=None):
            B, T, _ = x.shape
            q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)
            k = self.k_proj(x).view(B, T, Hkv, D).transpose(1, 2)
            v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)
            if cos is not None:
                q, k = rope(q, cos, sin), rope(k, cos, sin)
            past = 0
            if cache is not None:
                if "k" in cache:
                    past = cache["k"].shape[-2]
                    k = torch.cat([cache["k"], k], dim=-2)
                    v = torch.cat([cache["v"], v], dim=-2)
                cache["k"], cache["v"] = k, v
            o = TF.scaled_dot_product_attention(q, k, v, is_causal=past == 0, enable_gqa=Hkv != H)
            return self.o_proj(o.transpose(1, 2).reshape(B, T, C))

    class FeedForward(nn.Module):
        def __init__(self):
            super().__init__()
            F_ = config["ffn_hidden"]
            if llama:
                self.gate_up_proj = nn.Linear(C, 2 * F_, bias=False)
                self.down_proj = nn.Linear(F_, C, bias=False)
            else:
                self.c_fc = nn.Linear(C, F_, bias=bias)
                self.c_proj = nn.Linear(F_, C, bias=bias)

        def forward(self, x):
            if llama:
                gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
                return self.down_proj(TF.silu(gate) * up)
            return self.c_proj(TF.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = norm(), Attention(), norm(), FeedForward()

        def forward(self, x, cos=None, sin=None, cache=None):
            x = x + self.attn(self.ln_1(x), cos, sin, cache)
            return x + self.mlp(self.ln_2(x))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = nn.ModuleList(Block() for _ in range(config["n_layer"]))
            embed = nn.Embedding(config["vocab_size"], C)
            if llama:
                self.model = nn.ModuleDict(
                    {"embed_tokens": embed, "layers": blocks, "norm": norm()}
                )
                inv_freq = 1.0 / config["rope_base"] ** (torch.arange(0, D, 2).float() / D)
                angles = torch.outer(torch.arange(config["block_size"]).float(), inv_freq)
                self.register_buffer("rope_cos", angles.cos(), persistent=False)
                self.register_buffer("rope_sin", angles.sin(), persistent=False)
            else:
                positions = nn.Embedding(config["block_size"], C)
                self.transformer = nn.ModuleDict(
                    {"wte": embed, "wpe": positions, "h": blocks, "ln_f": norm()}
                )
            self.lm_head = nn.Linear(C, config["vocab_size"], bias=False)
            if config["tie_embeddings"]:
                self.lm_head.weight = embed.weight

        def forward(self, idx, caches=None):
            past = caches[0]["k"].shape[-2] if caches and "k" in caches[0] else 0
            T = idx.shape[1]
            cos = sin = None
            if llama:
                x = self.model["embed_tokens"](idx)
                blocks, final = self.model["layers"], self.model["norm"]
                cos, sin = self.rope_cos[past : past + T], self.rope_sin[past : past + T]
            else:
                pos = torch.arange(past, past + T, device=idx.device)
                x = self.transformer["wte"](idx) + self.transformer["wpe"](pos)
                blocks, final = self.transformer["h"], self.transformer["ln_f"]
            for i, block in enumerate(blocks):
                x = block(x, cos, sin, caches[i] if caches else None)
            return self.lm_head(final(x))

    return LM()


def load_weights(torch_model, weights: dict) -> None:
    """Copy ``weights`` (name -> ndarray, tinyllm's names) into the model, key for key."""
    import torch

    theirs = torch_model.state_dict()
    missing = sorted(set(theirs) - set(weights))
    if missing:
        raise KeyError(f"torch reference has parameters tinyllm lacks: {missing}")
    with torch.no_grad():
        for name, tensor in theirs.items():
            if tuple(tensor.shape) != weights[name].shape:
                raise ValueError(
                    f"{name}: torch {tuple(tensor.shape)} vs tinyllm {weights[name].shape}"
                )
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(weights[name])))


def build_torch_bert(config: dict):
    """A BERT encoder (Hugging Face ``config.json`` fields) as a PyTorch user writes it, with
    Hugging Face's parameter names, so ``model.safetensors`` loads key for key: nn.Linear,
    nn.LayerNorm, exact GELU, ``F.scaled_dot_product_attention`` with the boolean key-padding
    mask broadcast to [B, 1, 1, T]. forward(ids, mask, types) -> hidden [B, T, C]."""
    import torch
    import torch.nn.functional as TF
    from torch import nn

    C, H = config["hidden_size"], config["num_attention_heads"]
    D, F_, eps = C // H, config["intermediate_size"], config["layer_norm_eps"]

    class Dense(nn.Module):  # HF's BertSelfOutput / BertOutput: dense then LayerNorm
        def __init__(self, fan_in):
            super().__init__()
            self.dense = nn.Linear(fan_in, C)
            self.LayerNorm = nn.LayerNorm(C, eps=eps)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C)

        def forward(self, x, mask):
            B, T, _ = x.shape
            q = self.query(x).view(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
            k = self.key(x).view(B, T, H, D).transpose(1, 2)
            v = self.value(x).view(B, T, H, D).transpose(1, 2)
            o = TF.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # mask [B, 1, 1, T]
            return o.transpose(1, 2).reshape(B, T, C)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = Dense(C)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(C, F_)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.intermediate, self.output = Attention(), Intermediate(), Dense(F_)

        def forward(self, x, mask):
            a = self.attention.output.dense(self.attention.self(x, mask))
            x = self.attention.output.LayerNorm(x + a)
            h = TF.gelu(self.intermediate.dense(x))  # exact (erf) GELU
            return self.output.LayerNorm(x + self.output.dense(h))

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(config["vocab_size"], C)
            self.position_embeddings = nn.Embedding(config["max_position_embeddings"], C)
            self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], C)
            self.LayerNorm = nn.LayerNorm(C, eps=eps)

        def forward(self, ids, types):
            pos = torch.arange(ids.shape[1], device=ids.device)
            x = self.word_embeddings(ids) + self.position_embeddings(pos)
            return self.LayerNorm(x + self.token_type_embeddings(types))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings, self.encoder = Embeddings(), Encoder()

        def forward(self, ids, mask, types):
            x = self.embeddings(ids, types)
            keep = mask.bool()[:, None, None, :]  # [B, 1, 1, T], True = attend
            for layer in self.encoder.layer:
                x = layer(x, keep)
            return x

    return Bert()


def load_bert_weights(model, path: str) -> None:
    """Copy ``model.safetensors`` (read with ``safetensors.numpy``) into ``model``; checkpoint
    entries the encoder has no use for (pooler, position_ids) are skipped."""
    import torch
    from safetensors.numpy import load_file

    weights = {k.removeprefix("bert."): v for k, v in load_file(path).items()}
    theirs = model.state_dict()
    missing = sorted(set(theirs) - set(weights))
    if missing:
        raise KeyError(f"torch BERT: the checkpoint lacks {missing}")
    model.load_state_dict({k: torch.from_numpy(weights[k]) for k in theirs})


def mean_pool_normalize(hidden, mask):
    """sentence-transformers' mean pooling (mask-weighted mean over T) then L2 normalize."""
    import torch
    import torch.nn.functional as TF

    m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    pooled = (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return TF.normalize(pooled, p=2, dim=1)


# ---------------------------------------------------------------- the worker


def _tinyllm_modules() -> list[str]:
    return sorted(m for m in sys.modules if m == "tinyllm" or m.startswith("tinyllm."))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(spec: dict):
    import torch

    device = spec.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model = build_torch_model(spec["config"])
    load_weights(model, dict(np.load(spec["weights"])))
    model.to(device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    return torch, model, device, sync


def _check(spec: dict) -> dict:
    torch, model, device, _ = _setup(spec)
    import torch.nn.functional as TF

    batch = np.load(spec["batch"])
    x, y = (torch.from_numpy(batch[k]).to(device) for k in ("x", "y"))
    logits = model(x)
    loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    grads = {n: p.grad.detach().cpu().numpy() for n, p in model.named_parameters()}
    np.savez(spec["out"], **grads)
    return {"loss": float(loss.item())}


def _train(spec: dict) -> dict:
    torch, model, device, sync = _setup(spec)
    import torch.nn.functional as TF

    batch = np.load(spec["batch"])
    x, y = (torch.from_numpy(batch[k]).to(device) for k in ("x", "y"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        sync()
        t0 = time.perf_counter()
        logits = model(x)
        loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000)
    return {"times_ms": [round(t, 3) for t in times], "ms": round(statistics.median(times), 3),
            "loss": float(loss.item())}  # fmt: skip


def _generate(spec: dict) -> dict:
    torch, model, device, sync = _setup(spec)
    model.eval()
    prompt = torch.from_numpy(np.load(spec["batch"])["prompt"]).to(device)
    n_layer, new = spec["config"]["n_layer"], spec["new_tokens"]

    @torch.no_grad()
    def generate() -> list[int]:
        caches = [{} for _ in range(n_layer)]
        logits = model(prompt, caches)
        out = []
        for _ in range(new):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            logits = model(nxt, caches)
        return torch.cat(out, dim=1)[0].tolist()

    tokens = generate()
    times = []
    for i in range(spec["warmup"] + spec["runs"]):
        sync()
        t0 = time.perf_counter()
        generate()
        sync()
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000 / new)
    return {"times_ms": [round(t, 4) for t in times], "ms": round(statistics.median(times), 4),
            "tokens": tokens}  # fmt: skip


def _encode(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    with open(spec["model_config"]) as f:
        config = json.load(f)
    model = build_torch_bert(config)
    load_bert_weights(model, spec["model_weights"])
    model.eval()
    data = np.load(spec["batches"])
    n = int(data["n_batches"])
    batches = [tuple(torch.from_numpy(data[f"{k}_{i}"]) for k in ("ids", "mask", "types"))
               for i in range(n)]  # fmt: skip
    sentences = sum(b[0].shape[0] for b in batches)

    def embed_all():
        return [mean_pool_normalize(model(ids, mask, types), mask) for ids, mask, types in batches]

    with torch.inference_mode():
        if spec.get("out"):
            np.savez(spec["out"], **{f"e_{i}": e.numpy() for i, e in enumerate(embed_all())})
        for _ in range(spec.get("warmup", 1)):  # the first (longest) batch
            ids, mask, types = batches[0]
            mean_pool_normalize(model(ids, mask, types), mask)
        times = []
        for _ in range(spec.get("reps", 3)):
            t0 = time.perf_counter()
            embed_all()
            times.append(time.perf_counter() - t0)
    if not times:  # the agreement pass only
        return {"sentences": sentences}
    ms = statistics.median(times) * 1000
    return {"times_ms": [round(t * 1000, 2) for t in times], "ms": round(ms, 2),
            "sentences": sentences, "sentences_per_s": round(sentences / ms * 1000, 2)}  # fmt: skip


def _gemm(spec: dict) -> dict:
    import torch

    torch.manual_seed(0)
    pairs = [(tuple(a), tuple(b)) for a, b in spec["gemms"]]
    arrays = {}
    for a, b in pairs:
        for shape in (a, b):
            if shape not in arrays:
                arrays[shape] = torch.randn(shape, dtype=torch.float32)
    outs = {(a, b): torch.matmul(arrays[a], arrays[b]) for a, b in pairs}
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        for a, b in pairs:
            torch.matmul(arrays[a], arrays[b], out=outs[(a, b)])
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000)
    return {"times_ms": [round(t, 3) for t in times], "ms": round(statistics.median(times), 3)}


def main(argv: list[str] | None = None) -> int:
    """Run one worker spec (a JSON string or ``@file``); print one JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    text = argv[0]
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    spec = json.loads(text)
    if spec.get("prelude"):
        exec(compile(spec["prelude"], "<prelude>", "exec"), {})
    mode = spec["mode"]
    if mode == "probe":
        result: dict = {}
    else:
        modes = {"check": _check, "train": _train, "generate": _generate, "encode": _encode,
                 "gemm": _gemm}  # fmt: skip
        result = modes[mode](spec)
        import torch

        result.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    prefixes = ("OMP_", "TINYLLM_", "MALLOC_", "GOMP_", "KMP_")
    result.update(framework="torch", mode=mode, peak_rss_mb=round(_peak_rss_mb(), 1),
                  tinyllm_modules=_tinyllm_modules(),
                  env={k: v for k, v in os.environ.items() if k.startswith(prefixes)})  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
