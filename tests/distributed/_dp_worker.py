"""Run under ``mpiexec -n R``: R data-parallel ranks with batch B each vs one process with
batch R*B, float64, N AdamW steps of a tiny Llama, written as JSON by rank 0 to argv[1].

Every rank runs the training loop's own pieces (``lm_loss``, ``make_optimizer``, the
schedule, ``random_windows`` for the global batch, ``DataParallel.shard`` and
``allreduce_gradients``, gradient clipping). Rank 0 then also runs the one-process
reference on the same global batches and compares; a third run on rank 0's half alone (one
process, batch B) shows the comparison can tell the two apart.
"""

import json
import sys

import numpy as np

import tinyllm
from tinyllm.data.batches import random_windows
from tinyllm.distributed import DataParallel, init_process_group
from tinyllm.optim.lr_scheduler import warmup_cosine
from tinyllm.train import TrainConfig
from tinyllm.train.loop import lm_loss, make_optimizer, model_config_for
from tinyllm.train.tokens import load_tokens

STEPS, B = 5, 3
CONFIG = TrainConfig(d_model=16, n_layer=2, n_head=2, seq_len=12, batch_size=B, steps=STEPS,
                     lr=1e-2, warmup=1, grad_clip=1.0)  # fmt: skip


def run(dp, global_batch: int, keep: str = "shard"):
    """STEPS optimizer steps; returns {name: float64 array}. ``keep``: 'shard' (this rank's
    rows), 'all' (the whole global batch), 'first' (the first B rows only)."""
    from tinyllm.models import build_model

    tinyllm.manual_seed(CONFIG.seed)
    data = load_tokens(None, None)
    model = build_model(model_config_for(CONFIG, data.vocab_size)).double()
    if dp is not None:
        dp.broadcast_state(model)
    opt = make_optimizer(model, CONFIG)
    schedule = warmup_cosine(CONFIG.warmup, STEPS, CONFIG.min_lr_ratio)
    rng = np.random.default_rng(CONFIG.seed)
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = CONFIG.lr * schedule(step)
        x, y = random_windows(data.train, global_batch, CONFIG.seq_len, rng)
        if keep == "shard":
            x, y = dp.shard(x, y)
        elif keep == "first":
            x, y = x[:B], y[:B]
        lm_loss(model, x, y, "cpu").backward()
        if dp is not None:
            dp.allreduce_gradients(model.parameters())
        tinyllm.nn.utils.clip_grad_norm_(model.parameters(), CONFIG.grad_clip)
        opt.step()
        opt.zero_grad()
    return {k: v.data.copy() for k, v in model.state_dict().items()}


def main(out_path: str) -> None:
    group = init_process_group("cpu")
    # 4 KB buckets: the tiny model's gradients then travel in several buckets
    dp = DataParallel(group, bucket_cap_mb=4 / 1024)
    ranked = run(dp, dp.global_batch_size(B))
    assert all(v.dtype == np.float64 for v in ranked.values())
    # every rank holds the same parameters: compare with rank 0's, broadcast
    mine = np.concatenate([v.ravel() for v in ranked.values()])
    theirs = mine.copy()
    group.broadcast_([theirs], root=0)
    spread = float(np.max(np.abs(mine - theirs)))
    spreads = group.comm.gather(spread, root=0)
    if group.rank != 0:
        return
    one = run(None, dp.global_batch_size(B), keep="all")
    half = run(None, dp.global_batch_size(B), keep="first")
    diff = max(float(np.max(np.abs(ranked[k] - one[k]))) for k in one)
    control = max(float(np.max(np.abs(half[k] - one[k]))) for k in one)
    moved = max(float(np.max(np.abs(one[k] - v))) for k, v in run_init().items())
    with open(out_path, "w") as f:
        json.dump({"ranks": group.size, "max_diff": diff, "control_diff": control,
                   "rank_spread": max(spreads), "buckets": dp.last_buckets,
                   "moved": moved}, f)  # fmt: skip


def run_init():
    from tinyllm.models import build_model

    tinyllm.manual_seed(CONFIG.seed)
    data = load_tokens(None, None)
    model = build_model(model_config_for(CONFIG, data.vocab_size)).double()
    return {k: v.data.copy() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    main(sys.argv[1])
