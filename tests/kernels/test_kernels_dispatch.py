"""Tier selection: automatic by device, forced by $TINYLLM_KERNELS (read at call time) or by
the thread-local ``use``; and "path taken" proofs that the selected kernel really ran."""

import threading
import types

import numpy as np
import pytest

import tinyllm.kernels as K
from tinyllm.kernels import dispatch

numba = pytest.importorskip("numba")

FAKE_CUPY = types.SimpleNamespace(__name__="cupy")  # any module other than NumPy is a GPU


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


def test_auto_selects_by_device_and_dtype():
    assert K.select_tier("softmax_forward", np, np.float32) == "numba"
    assert K.select_tier("softmax_forward", np, np.float16) == "reference"
    assert K.select_tier("softmax_forward", np, np.float64, ("reference",)) == "reference"
    assert K.select_tier("softmax_forward", FAKE_CUPY, np.float32) == "cuda"
    assert K.select_tier("softmax_forward", FAKE_CUPY, np.float16) == "reference"
    assert K.select_tier("x", FAKE_CUPY, np.float32, ("reference", "numba")) == "reference"


def test_forced_tier_that_cannot_run_gives_the_device_choice():
    with K.use("numba"):
        assert K.select_tier("softmax_forward", FAKE_CUPY, np.float32) == "cuda"
    with K.use("cuda"):
        assert K.select_tier("softmax_forward", np, np.float32) == "numba"
    with K.use("reference"):
        assert K.select_tier("softmax_forward", FAKE_CUPY, np.float32) == "reference"


def test_numba_path_taken_proved_by_a_spy_and_compiled_signatures(monkeypatch):
    from tinyllm.kernels import softmax_numba

    launched = []
    choose = dispatch.numba_for_work

    def spy(kernel, work):
        chosen = choose(kernel, work)
        launched.append((kernel, chosen))
        return chosen

    monkeypatch.setattr(dispatch, "numba_for_work", spy)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    K.reset_counts()
    y = K.softmax_forward(x)
    twin = dispatch.serial_twin(softmax_numba.softmax_rows)  # 24 elements: the serial twin
    assert launched == [(softmax_numba.softmax_rows, twin)]
    assert K.last_tier("softmax_forward") == "numba"
    assert K.tier_counts() == {("softmax_forward", "numba"): 1}
    assert any(sig[0].dtype == numba.float32 for sig in twin.signatures)  # compiled code
    with K.use("reference"):
        y_ref = K.softmax_forward(x)
    assert len(launched) == 1  # the reference did not touch the kernel
    assert K.tier_counts()[("softmax_forward", "reference")] == 1
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)


def test_environment_variable_is_read_at_call_time(monkeypatch):
    x = np.ones((2, 3))
    K.softmax_forward(x)
    assert K.last_tier("softmax_forward") == "numba"
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    K.softmax_forward(x)
    assert K.last_tier("softmax_forward") == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    K.layer_norm_forward(x)
    assert K.last_tier("layer_norm_forward") == "numba"
    monkeypatch.setenv(dispatch.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="TINYLLM_KERNELS"):
        K.softmax_forward(x)


def test_use_wins_over_the_environment_nests_and_restores(monkeypatch):
    x = np.ones((2, 4))
    monkeypatch.setenv(dispatch.ENV_VAR, "numba")
    with K.use("reference"):
        K.rms_norm_forward(x)
        assert K.last_tier("rms_norm_forward") == "reference"
        with K.use("auto"):
            K.rms_norm_forward(x)
            assert K.last_tier("rms_norm_forward") == "numba"
        K.rms_norm_forward(x)
        assert K.last_tier("rms_norm_forward") == "reference"
    K.rms_norm_forward(x)
    assert K.last_tier("rms_norm_forward") == "numba"
    with pytest.raises(ValueError, match="kernels.use"):
        with K.use("fast"):
            pass


def test_use_is_thread_local():
    seen = {}

    def other():
        seen["tier"] = dispatch.requested_tier()

    with K.use("reference"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert dispatch.requested_tier() == "reference"
    assert seen["tier"] == "auto"


@pytest.mark.parametrize(
    "call, op",
    [
        (lambda x: K.log_softmax_backward(x, x), "log_softmax_backward"),
        (
            lambda x: K.cross_entropy_forward(x, np.zeros(x.shape[0], np.int64)),
            "cross_entropy_forward",
        ),
        (lambda x: K.cross_entropy_soft_forward(x, x * x), "cross_entropy_soft_forward"),
        (
            lambda x: K.cross_entropy_soft_backward(1.0, x, x * x, x[:, 0], target_grad=True),
            "cross_entropy_soft_backward",
        ),
        (lambda x: K.layer_norm_forward(x, residual=x), "layer_norm_forward"),
        (lambda x: K.rope_forward(x, x[:, :2], x[:, :2]), "rope_forward"),
        (lambda x: K.swiglu_backward(x[:, :2], x), "glu_backward"),
        (
            lambda x: K.adamw_step(x.copy(), x, x.copy(), x.copy() ** 2, step=1, lr=0.1),
            "adamw_step",
        ),
        (
            lambda x: K.attention_forward(x[None, None], x[None, None], x[None, None]),
            "attention_forward",
        ),
    ],
)
def test_every_op_runs_numba_by_default_and_reference_when_forced(call, op):
    x = np.random.default_rng(1).standard_normal((3, 4))
    call(x)
    assert K.last_tier(op) == "numba"
    with K.use("reference"):
        call(x)
    assert K.last_tier(op) == "reference"


def test_every_dispatched_kernel_declares_its_tiers():
    """What ``run`` dispatched (every op of the test above and more) has declared tiers, so
    the registry and ``tinyllm ops`` can report them; tiers are a subset of TIERS in order."""
    x = np.random.default_rng(2).standard_normal((3, 4))
    K.reset_counts()
    K.softmax_backward(x, K.softmax_forward(x))
    K.log_softmax_backward(x, K.log_softmax_forward(x))
    loss, lse = K.cross_entropy_forward(x, np.zeros(3, np.int64))
    K.cross_entropy_backward(1.0, x, np.zeros(3, np.int64), lse)
    K.cross_entropy_soft_backward(1.0, x, x * x, K.cross_entropy_soft_forward(x, x * x)[1])
    _, mean, rstd = K.layer_norm_forward(x)
    K.layer_norm_backward(x, x, mean, rstd)
    _, rstd = K.rms_norm_forward(x)
    K.rms_norm_backward(x, x, rstd)
    K.glu_backward(x[:, :2], x, "silu"), K.glu_forward(x, "gelu")
    K.activation_backward(x, x, "silu"), K.activation_forward(x, "gelu")
    K.rope_backward(x, x[:, :2], x[:, :2]), K.rope_forward(x, x[:, :2], x[:, :2])
    K.adamw_step(x.copy(), x, x.copy(), x.copy() ** 2, step=1, lr=0.1)
    q = x[None, None]
    o, lse = K.attention_forward(q, q, q)
    K.attention_backward(q, q, q, q, o, lse)
    ran = {op for op, _ in K.tier_counts()}
    assert len(ran) >= 19
    declared = K.declared_kernels()
    assert ran <= set(declared), f"dispatched but not declared: {sorted(ran - set(declared))}"
    for op, tiers in declared.items():
        assert tiers[0] == "reference" and tiers == tuple(t for t in K.TIERS if t in tiers), op
    assert K.kernel_tiers("cross_entropy_soft_forward") == ("reference", "numba")


def test_kernel_tiers_of_an_unknown_kernel_names_it():
    with pytest.raises(KeyError, match="no kernel named 'numba' is declared"):
        K.kernel_tiers("numba")
    with pytest.raises(ValueError, match="must include 'reference'"):
        dispatch.declare({"numba": len}, "made_up_op")


def test_narrow_floats_run_the_reference_in_float32():
    x = np.linspace(-2, 2, 12).reshape(3, 4).astype(np.float16)
    y = K.softmax_forward(x)
    assert K.last_tier("softmax_forward") == "reference" and y.dtype == np.float16
    y32 = K.softmax_forward(x.astype(np.float32))
    np.testing.assert_allclose(y.astype(np.float32), y32, rtol=2e-3)
    _, mean, rstd = K.layer_norm_forward(x)
    assert mean.dtype == rstd.dtype == np.float32


def test_importing_kernels_compiles_and_imports_nothing_of_numba():
    import subprocess
    import sys

    code = (
        "import sys, tinyllm; before = 'numba' in sys.modules; import tinyllm.kernels; "
        "jit = [m for m in sys.modules if m.startswith('tinyllm.kernels.') and "
        "('numba' in m)]; print(before or 'numba' not in sys.modules, jit)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []"
