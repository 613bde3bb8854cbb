"""The comparison harness: PyTorch runs in child processes that never import tinyllm."""

import argparse
import ast
import json
import subprocess
import sys

import numpy as np
import pytest

from tinyllm.bench import harness
from tinyllm.cli import bench_cmd

pytest.importorskip("numba")

TINY = ["--d-model", "32", "--n-layer", "1", "--n-head", "2", "--seq-len", "16", "--warmup", "0"]


def parser():
    p = argparse.ArgumentParser(prog="tinyllm")
    bench_cmd.register(p.add_subparsers(dest="command"))
    return p


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def test_torch_reference_never_imports_tinyllm():
    tree = ast.parse(harness.TORCH_SCRIPT.read_text())
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [n])
    ]
    assert not [m for m in imported if m and m.split(".")[0] == "tinyllm"], imported
    # run as the harness runs it (a script, the harness's environment): nothing of tinyllm
    probe = harness.run_child("torch", {"mode": "probe"})
    assert probe["tinyllm_modules"] == []
    assert not [k for k in probe["env"] if k.startswith("TINYLLM_")]
    # the probe can fail: a prelude that imports tinyllm is seen
    seen = harness.run_child("torch", {"mode": "probe", "prelude": "import tinyllm"})
    assert "tinyllm" in seen["tinyllm_modules"]


def test_compare_grads_flags_a_wrong_gradient(tmp_path):
    rng = np.random.default_rng(0)
    g = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    np.savez(tmp_path / "t.npz", **g)
    np.savez(tmp_path / "same.npz", **{k: v * (1 + 1e-7) for k, v in g.items()})
    np.savez(tmp_path / "off.npz", **{"a": g["a"], "b": g["b"] * 1.01})
    assert (
        harness.compare_grads(tmp_path / "same.npz", tmp_path / "t.npz")["worst_grad_rel_l2"] < 1e-6
    )
    bad = harness.compare_grads(tmp_path / "off.npz", tmp_path / "t.npz")
    assert bad["worst_grad_param"] == "b" and bad["worst_grad_rel_l2"] > 1e-3


def test_device_cuda_without_a_gpu_is_one_clear_line(capsys):
    from tinyllm.backend import cuda_is_available

    if cuda_is_available():
        pytest.skip("a GPU is here")
    args = parser().parse_args(["bench", "train-step", "--device", "cuda", "--compare", "torch"])
    if not _has_torch():
        assert args.func(args) == 2
        return
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "GPU" in err[0]


def test_compare_without_torch_says_how_to_install(capsys, monkeypatch):
    monkeypatch.setattr(bench_cmd, "_torch_missing", lambda: True)
    args = parser().parse_args(["bench", "train-step", "--compare", "torch"])
    assert args.func(args) == 2
    assert "pip install torch==2.13.0" in capsys.readouterr().err


@pytest.mark.skipif(not _has_torch(), reason="PyTorch is not installed (optional)")
@pytest.mark.parametrize("arch", ["llama", "gpt"])
def test_train_step_compare_alternates_child_processes(arch, capsys):
    args = parser().parse_args(
        ["bench", "train-step", "--compare", "torch", "--arch", arch, "--rounds", "2",
         "--steps", "2", "--batch", "2", "--verbose", *TINY]
    )  # fmt: skip
    assert args.func(args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    rounds, result = lines[:-1], lines[-1]
    assert [r["event"] for r in rounds] == ["round", "round"]
    assert result["rounds"] == 2 and len(result["per_round"]) == 2
    for r in result["per_round"]:
        assert len(r["tinyllm_times_ms"]) == 2 and len(r["torch_times_ms"]) == 2
        assert r["ratio"] == pytest.approx(r["tinyllm_ms"] / r["torch_ms"], rel=1e-3)
    assert result["ratio_min"] <= result["ratio_median"] <= result["ratio_max"]
    assert result["torch_imported_tinyllm"] is False
    # the GEMM-only comparison: both sides timed the same products, every round
    for r in result["per_round"]:
        assert r["gemm_ratio"] == pytest.approx(r["numpy_gemm_ms"] / r["torch_gemm_ms"], rel=1e-3)
    gemm = result["gemm_only"]
    assert gemm["numpy_ms"] > 0 and gemm["torch_ms"] > 0
    check = result["first_step_check"]
    assert check["agree_1e-4"], check
    assert check["params_missing"] == [] and check["torch_imported_tinyllm"] is False


def test_generate_alone_reports_where_a_call_spends_its_time(capsys):
    """``tinyllm bench generate``: the decoder's build, prefill and steps timed inside the
    real ``generate`` (its methods wrapped for the runs, restored after)."""
    from tinyllm.models.decoder import Decoder

    methods = (Decoder.__init__, Decoder.prefill, Decoder.step)
    args = parser().parse_args(["bench", "generate", "--new-tokens", "6", "--runs", "2", *TINY])
    assert args.func(args) == 0
    parts = json.loads(capsys.readouterr().out.splitlines()[-1])["parts_ms"]
    assert set(parts) == {"build", "prefill", "steps", "other"}
    assert parts["build"] > 0 and parts["prefill"] > 0 and parts["steps"] > 0
    assert parts["other"] >= 0
    assert (Decoder.__init__, Decoder.prefill, Decoder.step) == methods


@pytest.mark.skipif(not _has_torch(), reason="PyTorch is not installed (optional)")
def test_generate_compare_gives_the_same_tokens(capsys):
    args = parser().parse_args(
        ["bench", "generate", "--compare", "torch", "--rounds", "1", "--new-tokens", "6",
         "--runs", "1", "--no-check", *TINY]
    )  # fmt: skip
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["per_round"][0]["same_tokens"] == "6/6"
    assert result["tinyllm_ms_per_token"] > 0
    assert "first_step_check" not in result


def test_step_gemms_count_the_linear_layers_and_attention():
    from tinyllm.bench.worker import step_gemms

    config = {"arch": "gpt", "d_model": 64, "n_head": 2, "n_layer": 3, "n_kv_head": 2,
              "ffn_hidden": 256, "vocab_size": 100}  # fmt: skip
    gemms = step_gemms(config, batch=2, seq_len=8)
    assert len(gemms) == 3 * (3 * 6 + 6) + 3  # per layer 6 linears x 3 products + 6; head
    flops = sum(2 * np.prod(a) * b[-1] for _, a, b in gemms)
    linear = 6 * 16 * (3 * (4 * 64 * 64 + 2 * 64 * 256) + 64 * 100)
    attention = 3 * 12 * 2 * 2 * 8 * 8 * 32
    assert flops == linear + attention


@pytest.mark.slow
@pytest.mark.parametrize("bench", ["citizen", "threads", "load"])
def test_process_benchmarks_print_their_record(bench, capsys):
    extra = {"citizen": ["--gemm-n", "64", "--iters", "2", "--inner", "2"],
             "threads": [], "load": ["--busy", "1"]}[bench]  # fmt: skip
    args = parser().parse_args(["bench", bench, "--rounds", "1", "--steps", "1", *TINY, *extra])
    assert args.func(args) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert records and all(r["bench"] == bench for r in records)
    if bench == "threads":  # each variant's launch ran on its own layer (None: one thread)
        for variant in records[0]["variants"].values():
            layer = variant["env"].get("NUMBA_THREADING_LAYER", "workqueue")
            assert variant["launch_us"] > 0 and variant["launch_layer"] in (layer, None)


def test_worker_module_runs_as_a_child():
    """``python -m tinyllm.bench.worker`` works from the harness's interpreter."""
    proc = subprocess.run([sys.executable, "-m", "tinyllm.bench.worker", "{}"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "KeyError" in proc.stderr  # no mode: a clear failure


# ---------------------------------------------------------------- tinyllm bench encode
def _minilm_files():
    from tinyllm.tokenizers.pretrained import find_minilm_files

    return find_minilm_files()


@pytest.mark.skipif(_minilm_files() is None, reason="all-MiniLM-L6-v2 files not installed")
def test_encode_batches_are_length_sorted_padded_and_cover_every_text():
    from tinyllm.models.pretrained import load_pretrained_tokenizer

    tokenizer = load_pretrained_tokenizer(str(_minilm_files().directory))
    texts = harness.encode_texts("short", 7)
    assert len(texts) == 7 and len(set(texts)) == 7
    batches = harness.encode_batches(tokenizer, texts, 3)
    assert int(batches["n_batches"]) == 3
    lengths = sorted(batches["lengths"].tolist(), reverse=True)
    got = []
    for i in range(3):
        ids, mask, types = (batches[f"{k}_{i}"] for k in ("ids", "mask", "types"))
        assert ids.shape == mask.shape == types.shape and ids.dtype == np.int64
        assert mask[:, 0].all() and ids.shape[1] == mask.sum(1).max()  # padded to the longest
        assert (ids[mask == 0] == 0).all()
        got += mask.sum(1).tolist()
    assert got == lengths  # longest first, every text once
    long = harness.encode_texts("long", 2)
    assert all(len(t.split()) >= 100 for t in long)


@pytest.mark.skipif(not _has_torch() or _minilm_files() is None,
                    reason="needs PyTorch and the all-MiniLM-L6-v2 files")  # fmt: skip
def test_encode_compare_agrees_with_torch_and_alternates(capsys):
    args = parser().parse_args(
        ["bench", "encode", "--compare", "torch", "--sentences", "6", "--batch-size", "4",
         "--rounds", "1", "--reps", "1", "--warmup", "0", "--verbose"]
    )  # fmt: skip
    assert args.func(args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    rounds, result = lines[:-1], lines[-1]
    assert [r["event"] for r in rounds] == ["round"]
    assert result["sentences"] == 6 and result["batches"] == 2 and result["set"] == "short"
    assert result["agreement"]["agree_1e-5"], result["agreement"]
    assert result["torch_imported_tinyllm"] is False
    row = result["per_round"][0]
    assert row["ratio"] == pytest.approx(
        row["tinyllm_sentences_per_s"] / row["torch_sentences_per_s"], rel=1e-3
    )


def test_encode_options_are_checked(capsys):
    args = parser().parse_args(["bench", "encode", "--compare", "torch", "--rounds", "0"])
    if _has_torch():
        assert args.func(args) == 2
        assert "--rounds must be at least 1" in capsys.readouterr().err
