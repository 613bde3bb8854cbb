"""Data parallelism over MPI.

- 2 ranks with batch B each give the parameters of one process with batch 2B after N steps
  (float64; the test launches ``mpiexec -n 2`` itself, skipped with the reason when mpi4py or
  mpiexec is absent);
- ``mpiexec -n 2 python -m tinyllm train``: rank 0 alone writes the log and the checkpoint,
  the run equals one process with twice the batch, and resume continues exactly;
- without a launcher: the single-process group, the shard, and the bucketed all-reduce's
  packing and its no-gradient rule, on an in-process stand-in group.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm
from tinyllm.distributed import DataParallel, ProcessGroup, SingleProcessGroup, init_process_group
from tinyllm.distributed.process_group import launched_world

HERE = Path(__file__).parent


def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path, mpiexec_run):
    """float64: the averaged gradient (g_0 + g_1) / 2 of two B-row means equals the gradient
    of the 2B-row mean up to the order of additions (~1e-16 relative); 5 AdamW steps with
    clipping carry that to 6e-15 measured. Tolerance 1e-12: above that rounding noise, and
    ~1e10 below the gap to a run that sees only half of each batch (the control, ~7e-2)."""
    out = tmp_path / "dp.json"
    mpiexec_run([str(HERE / "_dp_worker.py"), str(out)])
    r = json.loads(out.read_text())
    assert r["ranks"] == 2
    assert r["rank_spread"] == 0.0  # every rank took exactly the same steps
    assert r["buckets"] > 1  # the gradients travelled in several buckets
    assert r["max_diff"] <= 1e-12, r
    assert r["control_diff"] > 1e-3 and r["moved"] > 1e-3, r  # the comparison can fail


TRAIN = [
    "--d-model",
    "16",
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--seq-len",
    "16",
    "--lr",
    "3e-3",
    "--warmup",
    "0",
    "--min-lr-ratio",
    "1.0",
    "--eval-interval",
    "2",
    "--eval-batches",
    "1",
    "--log-interval",
    "1",
    "--sample-tokens",
    "0",
    "--no-progress",
]  # fmt: skip  (constant lr: a 2-step run resumed to 4 = a 4-step run)


def _train_args(out_dir, name, batch, steps, *extra):
    return ["-m", "tinyllm", "train", *TRAIN, "--out-dir", str(out_dir), "--name", name,
            "--batch-size", str(batch), "--steps", str(steps), "--checkpoint-interval", "2",
            *extra]  # fmt: skip


def _state(run_dir):
    from tinyllm.io.checkpoint import load_checkpoint

    arrays, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    return {k: v for k, v in arrays.items() if k.startswith("model.")}, meta


def _records(run_dir):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def test_mpiexec_train_writes_once_matches_one_process_and_resumes(tmp_path, mpiexec_run):
    proc = mpiexec_run(_train_args(tmp_path, "dp", 2, 4))
    assert proc.stdout.count("done: 4 steps") == 1  # rank 0 reports, rank 1 is silent
    run = tmp_path / "dp"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.safetensors", "config.json", "log.jsonl", "loss.png"]  # fmt: skip
    records = _records(run)
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4]  # one line per step: only rank 0 wrote
    assert sum("val_bits_per_byte" in r for r in records) == 2
    weights, meta = _state(run)
    assert meta["world_size"] == 2

    # one process, batch 4 = 2 x 2: float32, so the summation-order differences (~1e-7
    # relative in the gradients) go through 4 AdamW steps of lr 3e-3: |diff| << 1e-5
    from tinyllm.cli.main import main as cli

    one_args = _train_args(tmp_path, "one", 4, 4)[2:]
    assert cli(one_args) == 0
    one, _ = _state(tmp_path / "one")
    for name, value in one.items():
        np.testing.assert_allclose(weights[name], value, rtol=0, atol=1e-5, err_msg=name)
    losses = [r["loss"] for r in _records(tmp_path / "one") if "loss" in r]
    np.testing.assert_allclose([r["loss"] for r in records if "loss" in r], losses, rtol=1e-5)

    # 2 ranks for 2 steps, then --resume to 4: equal to the 4-step 2-rank run bit for bit
    mpiexec_run(_train_args(tmp_path, "part", 2, 2))
    proc = mpiexec_run(["-m", "tinyllm", "train", "--resume", "--out-dir", str(tmp_path),
                    "--name", "part", "--steps", "4", "--no-progress"])  # fmt: skip
    assert proc.stdout.count("resumed") == 1
    resumed, _ = _state(tmp_path / "part")
    for name, value in weights.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    assert [r["loss"] for r in _records(tmp_path / "part") if "loss" in r] == [
        r["loss"] for r in records if "loss" in r
    ]
    # the 2-rank checkpoint resumed by one process is refused (its global batch would halve)
    assert cli(["train", "--resume", "--out-dir", str(tmp_path), "--name", "part",
                "--steps", "6", "--no-progress"]) == 2  # fmt: skip


# ---------------------------------------------------------------- without a launcher


def test_no_launcher_is_the_single_process_group(monkeypatch):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "PMIX_RANK"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert launched_world() is None
    group = init_process_group()
    assert isinstance(group, SingleProcessGroup) and group.rank == 0 and group.size == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launched_world() == (1, 4)


def test_launcher_without_mpi4py_is_an_error(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py -> ImportError
    with pytest.raises(RuntimeError, match="mpi4py is not installed"):
        init_process_group()


class TwinGroup(ProcessGroup):
    """An in-process stand-in for 2 ranks holding identical arrays: a sum doubles them.
    Records the buffers it was handed (the buckets)."""

    rank, size, backend = 0, 2, "twin"

    def __init__(self, other_has=None):
        self.seen = []
        self.other_has = other_has

    def allreduce_sum_(self, buffers):
        self.seen.append([b.size for b in buffers])
        for b in buffers:
            b *= 2

    def allreduce_max_int_(self, values):
        if self.other_has is not None:
            np.maximum(values, self.other_has, out=values)


def _params(shapes, rng):
    out = []
    for s in shapes:
        p = tinyllm.nn.Parameter(rng.standard_normal(s).astype(np.float32))
        p.grad = tinyllm.tensor(rng.standard_normal(s).astype(np.float32))
        out.append(p)
    return out


def test_buckets_pack_in_reverse_order_and_average():
    rng = np.random.default_rng(0)
    params = _params([(8, 8), (8,), (16, 8), (4,)], rng)  # 256, 32, 512, 16 bytes
    want = [p.grad.data.copy() for p in params]
    group = TwinGroup()
    dp = DataParallel(group, bucket_cap_mb=600 / 2**20)  # 600-byte buckets
    dp.allreduce_gradients(params)
    # reverse order: [16 B + 512 B + 32 B = 560 B] = 140 floats; 256 more would pass 600 B:
    # a second bucket [256 B] = 64 floats
    assert group.seen == [[140, 64]]
    for p, w in zip(params, want):
        np.testing.assert_array_equal(p.grad.data, w)  # (w + w) / 2 == w exactly


def test_parameters_without_gradient_follow_ddp():
    rng = np.random.default_rng(1)
    params = _params([(3,), (5,), (2,)], rng)
    params[1].grad = None  # no gradient here, but the other rank has one
    params[2].grad = None  # no gradient on any rank
    DataParallel(TwinGroup(other_has=np.array([1, 1, 0], np.int32))).allreduce_gradients(params)
    np.testing.assert_array_equal(params[1].grad.data, np.zeros(5, np.float32))  # (0 + 0) / 2
    assert params[2].grad is None  # the optimizer skips it, as in one process


def test_shard_splits_the_global_batch():
    class Rank1(TwinGroup):
        rank = 1

    x = np.arange(12).reshape(6, 2)
    (mine,) = DataParallel(Rank1()).shard(x)
    np.testing.assert_array_equal(mine, x[3:])
    with pytest.raises(ValueError, match="global batch of 5 rows does not split over 2"):
        DataParallel(Rank1()).shard(np.zeros((5, 2)))
    one = DataParallel(SingleProcessGroup())
    assert one.shard(x)[0] is not None and one.global_batch_size(4) == 4
