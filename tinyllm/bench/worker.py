"""The tinyllm side of the benchmark harness, run in a child process of its own.

``python -m tinyllm.bench.worker SPEC_JSON`` (or ``@file``) prints one JSON line. Modes
(``spec["mode"]``):

- ``init``: builds the model (seed 0) and writes its weights (``.npz``, tinyllm's names)
  and the batch; with ``spec["grads"]`` also the first step's loss and every gradient;
- ``train``: times forward + backward + AdamW steps (the model built from seed 0, so its
  weights equal the ones ``init`` wrote); with ``spec["launch"]`` also the cost of one empty
  parallel kernel launch under tinyllm's thread policy (``launch_us``);
- ``generate``: greedy decoding with the KV cache, batch 1; the tokens and ms per token;
- ``encode``: a BERT sentence encoder loaded from ``spec["model_dir"]`` (all-MiniLM-L6-v2)
  embeds the padded token batches the parent wrote (``tinyllm.embeddings.embed_batch``:
  forward + mean pooling + L2 normalize, under ``no_grad``); sentences/s per repeat, and
  with ``spec["out"]`` the embeddings of every batch, for the agreement check;
- ``gemm``: times only the matrix products of one training step, at the step's shapes, in
  NumPy (the GEMM-only bound of ``experiments/scaling.py``).

The worker calls ``tinyllm.runtime.tune_process()`` first, as ``tinyllm train`` does.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np


def model_config(spec: dict):
    """tinyllm's ModelConfig from the spec's ``config`` dict (ModelConfig's fields)."""
    from tinyllm.models import ModelConfig

    return ModelConfig(**spec["config"])


def _build(spec: dict):
    import tinyllm
    from tinyllm.models import build_model

    device = spec.get("device", "cpu")
    tinyllm.manual_seed(0)
    model = build_model(model_config(spec))
    if device != "cpu":
        model.to(device)
    return model, device


def _sync(device: str):
    if device == "cuda":
        import cupy

        return lambda: cupy.cuda.Device().synchronize()
    return lambda: None


def make_batch(config: dict, batch: int, seq_len: int, prompt_len: int = 8) -> dict:
    """The benchmark's tokens: x, y [batch, seq_len] and a [1, prompt_len] prompt (seed 0)."""
    rng = np.random.default_rng(0)
    V = config["vocab_size"]
    return {"x": rng.integers(0, V, (batch, seq_len)), "y": rng.integers(0, V, (batch, seq_len)),
            "prompt": np.random.default_rng(0).integers(0, V, (1, prompt_len))}  # fmt: skip


def _loss(model, x, y, device):
    import tinyllm
    import tinyllm.functional as F

    logits = model(tinyllm.tensor(x, device=device))
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), tinyllm.tensor(y.reshape(-1), device=device))


def _init(spec: dict) -> dict:
    from tinyllm.backend import to_numpy

    model, device = _build(spec)
    weights = {k: to_numpy(v.data) for k, v in model.state_dict().items()}
    np.savez(spec["weights"], **weights)
    result: dict = {"params": model.num_parameters()}
    if spec.get("grads"):
        batch = np.load(spec["batch"])
        loss = _loss(model, batch["x"], batch["y"], device)
        loss.backward()
        grads = {n: to_numpy(p.grad.data) for n, p in model.named_parameters()}
        np.savez(spec["out"], **grads)
        result["loss"] = float(loss.item())
    return result


def _train(spec: dict) -> dict:
    import tinyllm

    model, device = _build(spec)
    batch = np.load(spec["batch"])
    x, y = batch["x"], batch["y"]
    opt = tinyllm.optim.AdamW(model.parameters(), lr=3e-4)
    sync = _sync(device)
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        sync()
        t0 = time.perf_counter()
        loss = _loss(model, x, y, device)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000)
    result = {"times_ms": [round(t, 3) for t in times], "ms": round(statistics.median(times), 3),
              "loss": float(loss.item()), "params": model.num_parameters()}  # fmt: skip
    if spec.get("launch"):
        from tinyllm import runtime

        # the layer the steps ran on (None: no parallel kernel ran), before the launches
        result["steps_layer"] = runtime.thread_report().get("numba_threading_layer")
        result["launch_us"] = round(launch_overhead_us(), 2)
    return result


def launch_overhead_us(repeats: int = 200) -> float:
    """Median microseconds of one launch of a nearly empty parallel Numba kernel (16
    additions) through ``dispatch.parallel_launcher``: the fixed price of going parallel under
    the process's threading layer, which ``dispatch.SERIAL_BELOW`` weighs (the serial twin's
    call when the kernels run on one thread)."""
    from numba import njit, prange

    from tinyllm.kernels import dispatch

    @njit(parallel=True)
    def touch(a):
        for i in prange(a.shape[0]):
            a[i] += 1.0

    launch = dispatch.parallel_launcher(touch)
    a = np.zeros(16)
    launch(a)  # compiles; the first launch also starts the pool
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        launch(a)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _generate(spec: dict) -> dict:
    import tinyllm

    model, device = _build(spec)
    model.eval()
    prompt = tinyllm.tensor(np.load(spec["batch"])["prompt"], device=device)
    new = spec["new_tokens"]
    sync = _sync(device)
    out = model.generate(prompt, new, temperature=0)
    tokens = [int(t) for t in np.asarray(out.numpy())[0, prompt.shape[1] :]]
    times = []
    for i in range(spec["warmup"] + spec["runs"]):
        sync()
        t0 = time.perf_counter()
        model.generate(prompt, new, temperature=0)
        sync()
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000 / new)
    return {"times_ms": [round(t, 4) for t in times], "ms": round(statistics.median(times), 4),
            "tokens": tokens}  # fmt: skip


def step_gemms(config: dict, batch: int, seq_len: int) -> list[tuple[str, tuple, tuple]]:
    """Every matrix product of one training step: (name, shape of A, shape of B), A @ B.

    Linear layers (N = batch * seq_len rows): forward x W^T, backward dx = dy W and
    dW = dy^T x. Attention per layer: Q K^T and P V forward, four products backward (no
    causal skipping), batched over batch * heads.
    """
    C, H, L = config["d_model"], config["n_head"], config["n_layer"]
    Hkv = config.get("n_kv_head") or H
    D, N, T, BH = C // H, batch * seq_len, seq_len, batch * H
    F_ = config["ffn_hidden"]
    llama = config["arch"] == "llama"
    mlp = [(C, 2 * F_), (F_, C)] if llama else [(C, F_), (F_, C)]
    linears = [(C, H * D), (C, Hkv * D), (C, Hkv * D), (H * D, C), *mlp] * L
    linears.append((C, config["vocab_size"]))
    out = []
    for fan_in, fan_out in linears:
        out += [("fwd", (N, fan_in), (fan_in, fan_out)), ("dx", (N, fan_out), (fan_out, fan_in)),
                ("dw", (fan_out, N), (N, fan_in))]  # fmt: skip
    for _ in range(L):
        out += [("qk", (BH, T, D), (BH, D, T)), ("pv", (BH, T, T), (BH, T, D)),
                ("dp", (BH, T, D), (BH, D, T)), ("dv", (BH, T, T), (BH, T, D)),
                ("dq", (BH, T, T), (BH, T, D)), ("dk", (BH, T, T), (BH, T, D))]  # fmt: skip
    return out


def _gemm(spec: dict) -> dict:
    gemms = step_gemms(spec["config"], spec["batch_size"], spec["seq_len"])
    rng = np.random.default_rng(0)
    arrays = {}
    for _, a, b in gemms:
        for shape in (a, b):
            if shape not in arrays:
                arrays[shape] = rng.standard_normal(shape, dtype=np.float32)
    outs = {}
    for _, a, b in gemms:
        outs[(a, b)] = np.matmul(arrays[a], arrays[b])
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        for _, a, b in gemms:
            np.matmul(arrays[a], arrays[b], out=outs[(a, b)])
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000)
    flops = sum(2 * np.prod(a) * b[-1] for _, a, b in gemms)
    ms = statistics.median(times)
    return {"times_ms": [round(t, 3) for t in times], "ms": round(ms, 3), "gemms": len(gemms),
            "gflop": round(float(flops) / 1e9, 3),
            "gflops_per_s": round(float(flops) / ms / 1e6, 1)}  # fmt: skip


def _encode(spec: dict) -> dict:
    import tinyllm
    from tinyllm.embeddings import embed_batch
    from tinyllm.models.pretrained import load_pretrained

    model = load_pretrained(spec["model_dir"])
    model.eval()
    data = np.load(spec["batches"])
    n = int(data["n_batches"])
    batches = [tuple(data[f"{k}_{i}"] for k in ("ids", "mask", "types")) for i in range(n)]
    sentences = sum(b[0].shape[0] for b in batches)

    def embed_all():
        return [embed_batch(model, ids, mask, types) for ids, mask, types in batches]

    with tinyllm.no_grad():
        if spec.get("out"):
            np.savez(spec["out"], **{f"e_{i}": e for i, e in enumerate(embed_all())})
        for _ in range(spec.get("warmup", 1)):  # the first (longest) batch
            embed_batch(model, *batches[0])
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


def main(argv: list[str] | None = None) -> int:
    """Run one worker spec (a JSON string or ``@file``); print one JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    text = argv[0]
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    spec = json.loads(text)
    from tinyllm import runtime

    runtime.tune_process()
    mode = spec["mode"]
    modes = {"init": _init, "train": _train, "generate": _generate, "gemm": _gemm,
             "encode": _encode}  # fmt: skip
    result = modes[mode](spec)
    from tinyllm.bench.model_bench import peak_rss_mb

    result.update(framework="tinyllm", mode=mode, peak_rss_mb=round(peak_rss_mb(), 1),
                  threads=runtime.thread_report())  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
