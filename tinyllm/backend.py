"""Array backends: NumPy on the CPU, CuPy on a GPU, and every difference between the two.

A Tensor's array module (``xp``) decides where its ops run. Ops call
``xp = get_array_module(array)`` once and then use ``xp`` like NumPy. The few places where
NumPy and CuPy disagree (scatter-add, ``erf``, random numbers, 0-d results) live here and
nowhere else.

CuPy is optional. Detecting a GPU never raises and never imports CuPy at ``import tinyllm``;
the first call that needs to know (``cuda_is_available()``, ``device="cuda"``) does it once.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any

import numpy as np

DEFAULT_DTYPE = np.dtype(np.float32)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------- device detection (issue 16)


@dataclasses.dataclass(frozen=True)
class CudaCheck:
    """The outcome of ``check_cuda``: ``ok``, the step that failed (None when ok), one line."""

    ok: bool
    step: str | None
    message: str

    def __bool__(self) -> bool:
        return self.ok


_INSTALL_HINT = (
    "install CuPy with CUDA's libraries for the driver's CUDA major version: "
    "pip install 'tinyllm[cuda12]' or 'tinyllm[cuda13]' (cupy-cuda1Xx[ctk])"
)
# what each step needs, said when it fails
_STEP_NEEDS = {
    "import": "CuPy is not installed",
    "device": "no usable NVIDIA driver or GPU",
    "alloc": "device memory allocation failed",
    "nvrtc": "NVRTC (the runtime compiler, libnvrtc) is missing or broken",
    "cublas": "cuBLAS (libcublas) is missing or broken",
    "curand": "cuRAND (libcurand) is missing or broken",
    "sync": "the device reported an error at synchronize",
}


def check_cuda() -> CudaCheck:
    """Probe the GPU stack with one tiny operation per library; never raises.

    Steps, stopping at the first failure: import cupy; count devices (driver); allocate;
    an elementwise kernel compiled by NVRTC; a float32 matmul (cuBLAS); random draws
    (CuPy's Generator and cuRAND's host API); synchronize (asynchronous errors). CuPy 14
    does not bundle NVRTC, cuBLAS or cuRAND, so a driver-only machine imports cupy, sees
    the GPU and then fails at its first kernel: this says so in one line instead.
    """
    step = "import"
    try:
        import cupy

        step = "device"
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return CudaCheck(False, step, "CUDA check failed (device): no CUDA device found")
        step = "alloc"
        x = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
        step = "nvrtc"
        cupy.cuda.nvrtc.getVersion()  # loads libnvrtc
        kernel = cupy.RawKernel(
            'extern "C" __global__ void tinyllm_probe(float* y, int n) {'
            " int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = 2.0f * y[i]; }",
            "tinyllm_probe",
        )
        kernel((1,), (32,), (x, cupy.int32(x.size)))
        y = x * 2 + 1  # an elementwise kernel (NVRTC unless CuPy's disk cache has it)
        step = "cublas"
        z = y @ y.T
        step = "curand"
        r = cupy.random.default_rng(0).standard_normal(4, dtype=cupy.float32)
        cupy.random.RandomState(0).standard_normal(4)  # cuRAND's host library
        step = "sync"
        cupy.cuda.Device().synchronize()
        if float(z[0, 0]) != 1.0 + 25.0 + 81.0 or r.shape != (4,):
            return CudaCheck(False, step, f"CUDA check failed (sync): wrong result {z[0, 0]}")
        name = _device_name(cupy)
    except Exception as exc:  # noqa: BLE001  (any failure is the answer)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {first}"[:200]
        hint = "" if step in ("device", "alloc", "sync") else f"; {_INSTALL_HINT}"
        return CudaCheck(
            False, step, f"CUDA check failed ({step}): {_STEP_NEEDS[step]} ({detail}){hint}"
        )
    return CudaCheck(True, None, f"CUDA OK: {name}, CuPy {cupy.__version__}")


def _device_name(cupy) -> str:
    """'<name> (CUDA runtime X.Y, driver X.Y)' of device 0, best effort."""
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        name = "GPU 0"
    try:
        rt, drv = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
        versions = [f"{v // 1000}.{v % 1000 // 10}" for v in (rt, drv)]
        return f"{name} (CUDA runtime {versions[0]}, driver {versions[1]})"
    except Exception:  # noqa: BLE001
        return name


_cuda_status: CudaCheck | None = None


@functools.lru_cache(maxsize=1)
def _cupy():
    """The cupy module when ``check_cuda`` passes, else None (checked once per process).

    ``cupy.is_available()`` alone says yes on a driver-only machine whose first kernel then
    fails to compile; the probe runs one tiny operation per library instead.
    """
    global _cuda_status
    _cuda_status = check_cuda()
    if not _cuda_status.ok:
        return None
    import cupy

    return cupy


def cuda_status() -> CudaCheck:
    """The (cached) outcome of the check behind ``cuda_is_available``."""
    _cupy()
    assert _cuda_status is not None
    return _cuda_status


def _reset_cuda_detection() -> None:
    """Forget the cached detection (tests that install or remove a CuPy stand-in)."""
    global _cuda_status
    _cupy.cache_clear()
    _cuda_status = None
    _generators.pop("cuda", None)


def cuda_is_available() -> bool:
    """True when CuPy is installed and a GPU runs a kernel, a matmul and a random draw."""
    return _cupy() is not None


# ---------------------------------------------------------------- end of device detection


def get_array_module(array: Any):
    """numpy or cupy, whichever owns ``array`` (numpy for Python scalars and lists).

    Called by every op: it never imports CuPy, it only looks for it among loaded modules.
    """
    if isinstance(array, np.ndarray):
        return np
    cp = sys.modules.get("cupy")
    return cp if cp is not None and isinstance(array, cp.ndarray) else np


def normalize_device(device: Any) -> str:
    """'cpu' or 'cuda' from 'cpu', 'cuda', 'cuda:0', None (cpu) or a Tensor's device."""
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name == "cpu":
        return "cpu"
    if name in ("cuda", "cuda:0", "gpu"):
        if not cuda_is_available():
            raise RuntimeError(
                f"device {device!r} requested, but CUDA is not available: {cuda_status().message}"
            )
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def device_of(array: Any) -> str:
    """'cpu' for a NumPy array, 'cuda' for a CuPy array."""
    return "cpu" if get_array_module(array) is np else "cuda"


def xp_for(device: str):
    """The array module for a normalized device name."""
    return np if device == "cpu" else _cupy()


def to_device(array: Any, device: str):
    """``array`` moved to ``device`` ('cpu' or 'cuda'); no copy when already there."""
    if device == "cpu":
        if isinstance(array, np.ndarray):
            return array
        return array.get() if hasattr(array, "get") else np.asarray(array)
    return _cupy().asarray(array)


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (copies from the GPU)."""
    return to_device(array, "cpu")


def as_dtype(dtype: Any) -> np.dtype:
    """A NumPy dtype from a dtype, a type or a name ('float32', 'bfloat16' via ml_dtypes)."""
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, str) and dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def is_floating(dtype: np.dtype) -> bool:
    """True for floating dtypes (including bfloat16 from ml_dtypes)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"  # ml_dtypes' bfloat16 has kind "V"


# ---------------------------------------------------------------- NumPy/CuPy differences


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` with repeated indices accumulated (in place).

    Rows selected by one integer array (embedding and gather backwards) are summed with a sort
    and ``np.add.reduceat``: 2-3x faster than ``np.add.at`` at [1024, 256] (same sums, in
    another order).
    """
    xp = get_array_module(target)
    if xp is np:
        if isinstance(index, tuple) and len(index) == 1:
            index = index[0]
        if (
            isinstance(index, np.ndarray)
            and index.ndim == 1
            and index.dtype.kind in "iu"
            and index.size
            and values.shape[:1] == index.shape
        ):
            if index.dtype.kind == "i" and (index < 0).any():  # -1 and N-1 are one row
                index = np.where(index < 0, index + target.shape[0], index)
            order = np.argsort(index, kind="stable")
            rows, starts = np.unique(index[order], return_index=True)
            target[rows] += np.add.reduceat(values[order], starts, axis=0)
            return
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def erf(x):
    """The error function, elementwise, on either backend."""
    if get_array_module(x) is np:
        from scipy.special import erf as scipy_erf

        return scipy_erf(x).astype(x.dtype, copy=False)
    import cupyx.scipy.special

    return cupyx.scipy.special.erf(x)


def as_array(value, xp=np):
    """An ndarray from a value that may be a 0-d result (NumPy returns scalars from reductions)."""
    return value if isinstance(value, xp.ndarray) else xp.asarray(value)


# ---------------------------------------------------------------- random numbers

# Lazy GPU seeding: ``manual_seed`` remembers the seed, and the device generator is made
# (seeded) when first used, whether or not CuPy was imported before. CuPy's generator has no
# state a host can read or set, so its stream is keyed by (seed, epoch): ``get_rng_state``
# starts a new epoch and records it, ``set_rng_state`` restores it, and a run resumed from
# a checkpoint draws what the uninterrupted run drew after the same save.

_generators: dict[str, Any] = {}
_cuda_seed: int | None = None  # the base seed of the device stream (drawn once if unseeded)
_cuda_epoch = 0  # bumped by every get_rng_state


def manual_seed(seed: int) -> None:
    """Seed tinyllm's generators: NumPy's now, the GPU's when it is first used."""
    global _cuda_seed, _cuda_epoch
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generators["cpu"] = np.random.default_rng(int(seed))
    _cuda_seed, _cuda_epoch = int(seed), 0
    _generators.pop("cuda", None)  # made again, seeded, on first use


def _cuda_stream_seed() -> int:
    """The seed of the device generator for the current (seed, epoch)."""
    global _cuda_seed
    if _cuda_seed is None:  # never seeded: an entropy seed, kept so states can be saved
        _cuda_seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
    if _cuda_epoch == 0:
        return _cuda_seed
    words = np.random.SeedSequence((_cuda_seed, _cuda_epoch)).generate_state(2, np.uint32)
    return (int(words[0]) << 31) | (int(words[1]) >> 1)  # < 2**63


def generator(device: str = "cpu"):
    """The global random generator for ``device`` (seeded by ``manual_seed``).

    On the GPU it is CuPy's ``Generator``: it has ``random``, ``standard_normal``,
    ``integers``, ``standard_exponential``... but no ``normal``, ``uniform`` or
    ``permutation``; use ``normal``/``uniform``/``permutation`` below on either device.
    """
    gen = _generators.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng()
        else:
            cp = _cupy()
            if cp is None:
                raise RuntimeError(f"no GPU generator: {cuda_status().message}")
            gen = cp.random.default_rng(_cuda_stream_seed())
        _generators[device] = gen
    return gen


def get_rng_state() -> dict:
    """Both generators' states, JSON-serializable, for checkpoints.

    ``{"cpu": <NumPy bit_generator.state>, "cuda": {"seed": s, "epoch": e}}``. Starts a new
    device epoch (without touching the GPU), so that continuing after this call and
    continuing after ``set_rng_state`` of its result draw the same device numbers.
    """
    global _cuda_epoch
    _cuda_stream_seed()  # fixes the base seed if none was set
    _cuda_epoch += 1
    _generators.pop("cuda", None)
    return {
        "cpu": generator("cpu").bit_generator.state,
        "cuda": {"seed": int(_cuda_seed), "epoch": int(_cuda_epoch)},
    }


def set_rng_state(state: dict) -> None:
    """Restore what ``get_rng_state`` returned (either key may be missing)."""
    global _cuda_seed, _cuda_epoch
    if not isinstance(state, dict):
        raise TypeError(f"set_rng_state: expected a dict, got {type(state).__name__}")
    if "cpu" in state:
        cpu = np.random.default_rng()
        cpu.bit_generator.state = state["cpu"]
        _generators["cpu"] = cpu
    if "cuda" in state:
        cuda = state["cuda"]
        _cuda_seed, _cuda_epoch = int(cuda["seed"]), int(cuda["epoch"])
        _generators.pop("cuda", None)


def normal(gen, mean: float, std: float, size, dtype=np.float64):
    """N(mean, std^2) samples from a NumPy or CuPy generator (CuPy's has no ``normal``)."""
    return (gen.standard_normal(size, dtype=np.float64) * std + mean).astype(dtype, copy=False)


def uniform(gen, low: float, high: float, size, dtype=np.float64):
    """U[low, high) samples from a NumPy or CuPy generator (CuPy's has no ``uniform``)."""
    return (gen.random(size, dtype=np.float64) * (high - low) + low).astype(dtype, copy=False)


def permutation(gen, n: int):
    """A random permutation of range(n) as int64, on the generator's device.

    NumPy's generator: ``permutation`` (its stream as before). CuPy's has none: the argsort
    of n uniform float64 draws (ties have probability ~n^2 2^-53).
    """
    if isinstance(gen, np.random.Generator):
        return gen.permutation(n).astype(np.int64)
    return gen.random(n, dtype=np.float64).argsort().astype(np.int64)


if __name__ == "__main__":  # python -m tinyllm.backend: the one-line device check
    _result = check_cuda()
    print(_result.message)
    sys.exit(0 if _result.ok else 1)
