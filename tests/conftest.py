import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("tinyllm", deadline=None, max_examples=25, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tinyllm"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mpiexec_run():
    """``run(args, ranks=2, timeout=180, single_thread=True)``: ``mpiexec -n ranks python
    *args`` from the repository root (on PYTHONPATH), asserted to exit 0; the test is skipped
    when mpi4py or mpiexec is missing. ``single_thread`` pins each rank's thread pools to one
    thread (ranks share the cores)."""
    pytest.importorskip("mpi4py", reason="MPI tests need mpi4py (pip install mpi4py mpich)")
    here = Path(sys.executable).with_name("mpiexec")
    mpiexec = str(here) if here.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not found (pip install mpich)")

    def run(args, ranks=2, timeout=180, single_thread=True):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path)}
        if single_thread:
            env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        proc = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=str(REPO))  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    return run


@pytest.fixture(scope="session")
def tiny_run():
    """``make(path, rope_scaling=None, **train_config)``: a run folder as ``tinyllm train``
    writes it (config.json and a checkpoint at step 0) holding an untrained byte-level model,
    by default a 1-layer Llama with d_model 32, 2 heads, seq_len 16; returns ``path``. With
    ``rope_scaling`` the model's RoPE is scaled and the checkpoint remembers it in
    ``model_config``, as training writes it."""

    def make(path, rope_scaling=None, **overrides):
        import tinyllm
        from tinyllm.io.checkpoint import save_checkpoint
        from tinyllm.models import build_model
        from tinyllm.nn.positional import set_rope_scaling
        from tinyllm.train.config import TrainConfig
        from tinyllm.train.loop import model_config_for

        config = TrainConfig(**{"d_model": 32, "n_layer": 1, "n_head": 2, "seq_len": 16,
                                **overrides})  # fmt: skip
        tinyllm.manual_seed(0)
        model = build_model(model_config_for(config, 256))
        meta = {"step": 0}
        if rope_scaling is not None:
            set_rope_scaling(model, rope_scaling)
            meta["model_config"] = model.config.to_dict()
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps(config.to_dict()))
        arrays = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
        save_checkpoint(path / "checkpoint.safetensors", arrays, meta)
        return path

    return make


@pytest.fixture
def rtn_quantized(capsys):
    """``make(run, out)``: ``tinyllm quantize run --method rtn --bits 4 --group-size 16 --out
    out``, asserted to succeed (its output discarded); returns ``out``."""

    def make(run, out):
        from tinyllm.cli.main import main

        assert main(["quantize", str(run), "--method", "rtn", "--bits", "4", "--group-size",
                     "16", "--out", str(out)]) == 0  # fmt: skip
        capsys.readouterr()
        return out

    return make


@pytest.fixture(scope="session")
def load_experiment():
    """``load_experiment(name)``: ``experiments/<name>.py`` imported as a module (the
    experiments are scripts, not a package)."""

    def load(name):
        path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_experiment", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
