# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 8. Training a language model: loss curves, the reference band, gradient flow
#
# Next-byte prediction: for a window of bytes $x_{1..T}$ the model outputs logits for each
# position, and the loss is the mean cross-entropy against the next byte,
#
# $$\mathcal{L} = -\frac{1}{BT} \sum_{b,t} \log p_\theta(x_{b,t+1} \mid x_{b,\le t}),$$
#
# in nats per byte; divide by $\ln 2$ for bits per byte. A model that knows nothing predicts
# uniformly over 256 bytes: $\ln 256 \approx 5.545$ nats. One step = forward, backward (every op's
# hand-written backward, notebooks 2 to 6), global-norm clipping, AdamW with warmup + cosine
# (notebook 7).
#
# `tinyllm train` trains a 3.3M-parameter Llama for 1,000 steps (minutes). Here, to finish in
# seconds, the same loop trains a **tiny** Llama (d_model 32, 2 layers) for 150 steps on the
# same embedded corpus (Python's help topics).

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.data.batches import random_windows
from tinyllm.data.corpus import default_corpus_bytes, split_bytes
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.gradflow import GradFlowRecorder
from tinyllm.models import Llama, ModelConfig
from tinyllm.nn.utils import clip_grad_norm_
from tinyllm.optim import AdamW
from tinyllm.optim.lr_scheduler import LambdaLR, warmup_cosine
from tinyllm.train.band import load_band

tinyllm.manual_seed(0)
train_bytes, val_bytes = split_bytes(default_corpus_bytes())
config = ModelConfig(arch="llama", vocab_size=256, d_model=32, n_layer=2, n_head=2, block_size=32)
model = Llama(config)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# Before training anything, the whole model's gradient is checked in float64 against finite
# differences, parameter by parameter, along random directions (a copy of the model, so the
# float32 model trains unchanged).

# %%
check_model = Llama(config).double()
xb, yb = random_windows(train_bytes, 2, 8, np.random.default_rng(0))
xb, yb = tinyllm.tensor(xb), tinyllm.tensor(yb)
rows = gradcheck_parameters(
    check_model,
    lambda: F.cross_entropy(check_model(xb).reshape(-1, 256), yb.reshape(-1)),
    n_directions=2,
)
worst = max(r["max_rel_error"] for r in rows)
print(f"{len(rows)} parameters gradchecked; worst relative error {worst:.1e}")
assert all(r["passed"] for r in rows)

# %%
steps, batch, T = 150, 8, 32
opt = AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
sched = LambdaLR(opt, warmup_cosine(15, steps, 0.1))
recorder = GradFlowRecorder(model)
rng = np.random.default_rng(0)
losses, records = [], []
for step in range(steps):
    x, y = random_windows(train_bytes, batch, T, rng)
    loss = F.cross_entropy(model(tinyllm.tensor(x)).reshape(-1, 256), tinyllm.tensor(y).reshape(-1))
    opt.zero_grad()
    loss.backward()
    clip_grad_norm_(model.parameters(), 1.0)
    if step % 10 == 0:
        recorder.before_step()
    lr = opt.param_groups[0]["lr"]
    opt.step()
    if step % 10 == 0:
        records += recorder.record(step, lr=lr)
    sched.step()
    losses.append(loss.item())


def validation_loss(model, n=16):
    xv, yv = random_windows(val_bytes, n, T, np.random.default_rng(1))
    with tinyllm.no_grad():
        return F.cross_entropy(
            model(tinyllm.tensor(xv)).reshape(-1, 256), tinyllm.tensor(yv).reshape(-1)
        ).item()


val = validation_loss(model)
last = np.mean(losses[-10:])
print(f"first loss {losses[0]:.3f} nats (uniform: {math.log(256):.3f}); last 10: {last:.3f}")
print(f"validation {val:.3f} nats/byte = {val / math.log(2):.3f} bits/byte")
assert abs(losses[0] - math.log(256)) < 0.1  # small init: nearly uniform predictions at step 0
assert np.mean(losses[-10:]) < losses[0] - 1.0  # it learned (byte frequencies, at least)

# %% [markdown]
# ## The reference band: "is my loss curve normal?"
#
# `tinyllm train` compares each evaluation with a band measured over several seeds of the
# default configuration. Our tiny run is a different configuration, so its curve is *not*
# expected inside the band; the band is drawn for what a normal default run looks like.

# %%
band = load_band("llama")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
axes[0].plot(np.array(losses) / math.log(2), lw=1, label="this tiny run (train, bits/byte)")
axes[0].axhline(8.0, color="gray", ls=":", label="uniform over 256 bytes: 8 bits")
axes[0].axhline(val / math.log(2), color="C1", ls="--", label="this run, validation")
axes[0].set_xlabel("step")
axes[0].set_ylabel("bits per byte")
axes[0].legend()
if band is not None:
    axes[1].fill_between(
        band["steps"], band["min"], band["max"], alpha=0.4, label=f"band, seeds {band['seeds']}"
    )
    axes[1].set_title("reference band of the default `tinyllm train`")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("validation bits per byte")
    axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Gradient flow
#
# Per parameter, every 10 steps: the gradient norm $\|g\|$ and the measured update ratio
# $\|\Delta p\| / \|p\|$ (`tinyllm.gradflow`). Early layers far below the last ones would mean
# vanishing gradients; ratios far above $10^{-3}$ mean a layer is being rewritten each step.

# %%
names = list(dict.fromkeys(r["param"] for r in records))
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for i, name in enumerate(names):
    rs = [r for r in records if r["param"] == name]
    color = plt.cm.viridis(i / max(len(names) - 1, 1))
    axes[0].semilogy([r["step"] for r in rs], [r["grad_norm"] for r in rs], color=color, lw=1)
    axes[1].semilogy([r["step"] for r in rs], [r["update_ratio"] for r in rs], color=color, lw=1)
axes[0].set_title("gradient norm (dark: first layer, light: last)")
axes[1].set_title("update / parameter norm")
axes[1].axhline(1e-3, color="gray", ls="--")
for ax in axes:
    ax.set_xlabel("step")
plt.tight_layout()
plt.show()
