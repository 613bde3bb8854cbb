"""``import tinyllm`` changes nothing global; the thread policy applies at first kernel use.

Each check runs in a fresh interpreter: what a process-wide setting does depends on what
ran before it in the process.
"""

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

# Reads every global that tinyllm could touch, before and after ``import tinyllm``; the
# BLAS pool is read through ctypes (or threadpoolctl), never through tinyllm.
PROBE = textwrap.dedent(
    """
    import ctypes, importlib.util, json, os, sys
    def blas_threads():
        try:
            import threadpoolctl
            return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                    if p["user_api"] == "blas"]
        except ImportError:
            pass
        out = []
        for path in sorted({l.split()[-1] for l in open("/proc/self/maps") if "openblas" in l}):
            lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_NOLOAD)
            for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                         "openblas_get_num_threads"):
                if hasattr(lib, name):
                    out.append(getattr(lib, name)())
                    break
        return out
    def snapshot():
        import numba
        s = {"env": dict(os.environ), "blas": blas_threads(),
             "numba_layer_config": numba.config.THREADING_LAYER}
        try:
            s["numba_layer_running"] = numba.threading_layer()
        except ValueError:
            s["numba_layer_running"] = None
        if importlib.util.find_spec("torch"):
            import torch
            s["torch_threads"] = torch.get_num_threads()
            s["torch_interop_threads"] = torch.get_num_interop_threads()
        return s
    import numpy, numba
    try:  # imported before the first snapshot: its import sets KMP_DUPLICATE_LIB_OK
        import threadpoolctl
    except ImportError:
        pass
    before = snapshot()
    exec(sys.argv[1])
    after = snapshot()
    import numba
    after["numba_threads"] = numba.get_num_threads()  # starts Numba's pool: read last
    import tinyllm.runtime
    print(json.dumps({"before": before, "after": after,
                      "applied": dict(tinyllm.runtime.applied)}))
    """
)


def _probe(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _changes(result: dict) -> list[str]:
    before, after = result["before"], result["after"]
    changed = [f"env {k}" for k in set(before["env"]) | set(after["env"])
               if before["env"].get(k) != after["env"].get(k)]  # fmt: skip
    for key in before:
        if key != "env" and before[key] != after.get(key):
            changed.append(f"{key}: {before[key]} -> {after.get(key)}")
    if result["applied"]:
        changed.append(f"runtime.applied {result['applied']}")
    return changed


def test_import_tinyllm_changes_nothing_global():
    import numba

    result = _probe("import tinyllm, tinyllm.kernels, tinyllm.models, tinyllm.nn")
    assert _changes(result) == []
    assert result["after"]["numba_threads"] == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize(
    "code",
    [
        "import os; import tinyllm; os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'",
        "import tinyllm; tinyllm.runtime.tune_process()",
        "import tinyllm, numba; numba.config.THREADING_LAYER = 'workqueue'",
    ],
)
def test_the_probe_sees_a_global_change(code):
    """The probe above can fail: each of these changes is reported."""
    assert _changes(_probe(code))


def _run(code: str, env: dict | None = None) -> dict:
    import os

    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("TINYLLM_", "NUMBA_THREADING", "OMP_"))}  # fmt: skip
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


KERNEL_RUN = """
    import json, os
    import numpy as np
    import tinyllm.kernels as K
    from tinyllm import runtime
    from tinyllm.kernels import dispatch
    x = np.random.default_rng(0).standard_normal((1, dispatch.SERIAL_BELOW), dtype=np.float32)
    y = K.softmax_forward(x)
    ok = bool(np.allclose(y, K.softmax_forward(x.astype(np.float64)), atol=1e-6))
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    print(json.dumps({"layer": layer, "threads": runtime.kernel_threads(), "ok": ok,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "blas": runtime.blas_threads()}))
"""


def test_first_parallel_kernel_chooses_workqueue_and_the_blas_pool_size():
    r = _run(KERNEL_RUN)
    assert r["ok"] and r["layer"] == "workqueue"
    assert r["threads"] == min(r["blas"], __import__("numba").config.NUMBA_NUM_THREADS)


def test_running_a_kernel_sets_no_environment_variable():
    assert _run(KERNEL_RUN)["omp_wait_policy"] is None


def test_a_users_threading_layer_is_respected():
    r = _run(KERNEL_RUN, {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "PASSIVE"})
    assert r["ok"] and r["layer"] == "omp"


def test_tinyllm_num_threads_1_runs_serial_twins_and_tune_process_limits_blas():
    r = _run(KERNEL_RUN, {"TINYLLM_NUM_THREADS": "1"})
    assert r["ok"] and r["threads"] == 1 and r["layer"] is None  # no pool ever started
    r = _run(
        """
        import json, tinyllm
        from tinyllm import runtime
        before = runtime.blas_threads()
        applied = runtime.tune_process()
        print(json.dumps({"before": before, "after": runtime.blas_threads(),
                          "applied": applied, "again": runtime.tune_process() is applied}))
        """,
        {"TINYLLM_NUM_THREADS": "1"},
    )
    assert r["after"] == 1 and r["applied"]["blas_threads"] == 1 and r["again"]
    assert "mallopt" in r["applied"]


def test_tinyllm_num_threads_reaches_the_blas_that_the_decode_kernel_loads():
    """The whole-step decoding kernel calls SciPy's OpenBLAS (Numba's np.dot), a second
    pool loaded after tune_process(): it gets the TINYLLM_NUM_THREADS limit too."""
    pytest.importorskip("threadpoolctl")
    r = _run(
        """
        import json, numpy as np, threadpoolctl, tinyllm
        from tinyllm import runtime
        from tinyllm.models import ModelConfig, build_model
        runtime.tune_process()
        config = ModelConfig(arch="gpt", vocab_size=11, d_model=16, n_layer=1, n_head=2,
                             block_size=8)
        build_model(config).generate(tinyllm.tensor(np.array([[1, 2]])), 2, temperature=0)
        pools = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()
                 if p["user_api"] == "blas"}
        print(json.dumps({"pools": pools}))
        """,
        {"TINYLLM_NUM_THREADS": "1"},
    )
    assert set(r["pools"].values()) == {1}, r["pools"]  # NumPy's pool and SciPy's


def test_parallel_kernels_from_several_threads_do_not_abort():
    """workqueue aborts the process on concurrent parallel launches; the launcher's lock
    sends a second thread to the serial twin instead."""
    r = _run(
        """
        import json, threading
        import numpy as np
        import tinyllm.kernels as K
        from tinyllm.kernels import dispatch
        # work at the parallel threshold, so that every call asks for the parallel kernel
        x = np.random.default_rng(0).standard_normal((16, dispatch.SERIAL_BELOW // 16),
                                                     dtype=np.float32)
        want = K.softmax_forward(x)
        bad = []
        def work():
            for _ in range(10):
                if not np.array_equal(K.softmax_forward(x), want):
                    bad.append(1)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        import numba
        print(json.dumps({"bad": len(bad), "layer": numba.threading_layer()}))
        """
    )
    assert r == {"bad": 0, "layer": "workqueue"}


def test_child_env_drops_tinyllm_variables_and_later_changes(monkeypatch):
    from tinyllm import runtime

    monkeypatch.setitem(runtime.ENV_AT_IMPORT, "TINYLLM_KERNELS", "reference")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # set after import: never inherited
    torch_env = runtime.child_env("torch")
    assert not [k for k in torch_env if k.startswith("TINYLLM_")]
    if "OMP_WAIT_POLICY" not in runtime.ENV_AT_IMPORT:
        assert "OMP_WAIT_POLICY" not in torch_env
    assert runtime.child_env("tinyllm")["TINYLLM_KERNELS"] == "reference"
