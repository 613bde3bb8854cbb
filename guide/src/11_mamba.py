# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 11. Mamba: the selective scan, its reverse scan, and decoding in constant time
#
# A state-space model maps an input signal $u(t)$ to an output $y(t)$ through a hidden state
# $h(t) \in \mathbb{R}^N$: $\;h'(t) = A\,h(t) + B\,u(t),\; y(t) = C\,h(t)$. Mamba (Gu & Dao 2023) keeps
# $A$ diagonal and real (negative: the state decays) and, per channel, discretizes with a step
# $\Delta$. Holding $u$ constant over one step (zero-order hold) solves the ODE exactly:
#
# $$h_t = e^{\Delta A} h_{t-1} + (\Delta A)^{-1}\big(e^{\Delta A} - I\big)\,\Delta B\, u_t
# \;\approx\; \underbrace{e^{\Delta A}}_{a_t} h_{t-1} + \underbrace{\Delta B\, u_t}_{b_t},$$
#
# and Mamba uses the exact $a_t$ for $A$ with the first-order term $\Delta B$ for $B$ (the two
# agree to $O(\Delta^2)$). What makes it **selective**: $\Delta_t = \operatorname{softplus}(\delta_t + \beta)$,
# $B_t$ and $C_t$ are computed from the input at every step, so the model decides per token
# how much to remember ($\Delta \to 0$: $a_t \to 1$, keep the state) or overwrite ($\Delta$ large:
# $a_t \to 0$). The output is $y_t = \langle C_t, h_t\rangle + D u_t$, gated by $\operatorname{silu}(z_t)$.
#
# `F.selective_scan` has the signature of `mamba_ssm`'s `selective_scan_fn`:
# u, delta, z $[\text{batch}, \text{dim}, L]$; A $[\text{dim}, N]$; B, C $[\text{batch}, N, L]$. First the
# recurrence written as the plainest possible loop, against tinyllm.

# %%
import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
import tinyllm.kernels as K
from tinyllm.gradcheck import gradcheck_parameters
from tinyllm.models import MambaConfig, MambaLM

rng = np.random.default_rng(0)
batch, dim, L, N = 2, 3, 10, 4
u_, delta_, z_ = (rng.standard_normal((batch, dim, L)) for _ in range(3))
A_ = -rng.uniform(0.5, 2.0, (dim, N))  # negative: a decaying state
B_, C_ = (rng.standard_normal((batch, N, L)) for _ in range(2))
D_, bias_ = rng.standard_normal(dim), rng.standard_normal(dim)


def softplus(x):
    return np.log1p(np.exp(x))


def silu(x):
    return x / (1 + np.exp(-x))


def scan_loop(u, delta, A, B, C, D, z, bias):
    """The recurrence, one batch row, channel and step at a time."""
    out = np.zeros_like(u)
    for b in range(u.shape[0]):
        for d in range(u.shape[1]):
            h = np.zeros(A.shape[1])
            for t in range(u.shape[2]):
                dt = softplus(delta[b, d, t] + bias[d])
                h = np.exp(dt * A[d]) * h + dt * B[b, :, t] * u[b, d, t]
                y = C[b, :, t] @ h + D[d] * u[b, d, t]
                out[b, d, t] = y * silu(z[b, d, t])
    return out


T = tinyllm.tensor
ours = F.selective_scan(
    T(u_), T(delta_), T(A_), T(B_), T(C_), T(D_), T(z_), delta_bias=T(bias_), delta_softplus=True
).numpy()
loop = scan_loop(u_, delta_, A_, B_, C_, D_, z_, bias_)
print("max |loop - F.selective_scan| =", np.abs(loop - ours).max())
assert np.allclose(loop, ours, rtol=0, atol=1e-12)  # same float64 operations, different order

# %% [markdown]
# How good is the discretization? For a constant input $u = 1$ from $h(0) = 0$, the ODE's exact
# state at time $\tau$ is $h(\tau) = (e^{A\tau} - 1)/A \cdot B$. Running the scan for $n$ steps of
# $\Delta = \tau/n$ must approach it, with the error of a first-order method: $O(\Delta)$ over
# the whole interval (the $O(\Delta^2)$ per step of $\Delta B$, accumulated over $n$ steps), so
# doubling $n$ halves it. With the exact zero-order-hold term for $B$ as well, the scan is exact
# for a constant input at any $\Delta$.

# %%
A1, tau = np.array([[-1.0, -3.0]]), 1.0  # one channel, N = 2 states; B = C = 1
exact = (np.exp(A1[0] * tau) - 1) / A1[0]
errors = []
for n in (8, 16, 32, 64):
    step, ones = tau / n, np.ones((1, 1, n))
    B_euler = np.ones((1, 2, n))
    _, last = F.selective_scan(T(ones), T(ones * step), T(A1), T(B_euler), T(B_euler),
                               return_last_state=True)  # fmt: skip
    errors.append(np.abs(last.numpy()[0, 0] - exact).max())
    print(f"n = {n:3d} steps: max |h_n - h(tau)| = {errors[-1]:.2e}")
    # the exact ZOH input term, (Delta A)^-1 (e^{Delta A} - 1) Delta B, passed in as Delta B_zoh
    B_zoh = np.repeat(((np.exp(step * A1[0]) - 1) / (step * A1[0]))[None, :, None], n, 2)
    _, last_zoh = F.selective_scan(T(ones), T(ones * step), T(A1), T(B_zoh), T(B_euler),
                                   return_last_state=True)  # fmt: skip
    assert np.allclose(last_zoh.numpy()[0, 0], exact, rtol=0, atol=1e-12)
ratios = np.array(errors[:-1]) / np.array(errors[1:])
assert np.all(np.abs(ratios - 2) < 0.15), ratios  # first order: halving Delta halves the error
print("with the exact ZOH term for B the scan is exact at every n (to 1e-12)")

# %% [markdown]
# ## The same scan in parallel: an associative operator
#
# The recurrence $h_t = a_t h_{t-1} + b_t$ is a composition of affine maps $h \mapsto a h + b$.
# Composing "step 1, then step 2" gives another affine map,
#
# $$(a_1, b_1) \bullet (a_2, b_2) = (a_1 a_2,\; a_2 b_1 + b_2),$$
#
# and $\bullet$ is associative, so all prefixes $(a_0,b_0) \bullet \dots \bullet (a_t,b_t) = (\cdot, h_t)$
# can be computed in $\lceil\log_2 L\rceil$ rounds of elementwise work (Hillis-Steele): round $r$
# combines element $t$ with element $t - 2^r$. That is the form a GPU runs in parallel over
# time; `tinyllm.kernels.selective_scan_associative` implements it, and here it must equal the
# sequential scan, including the last state $h_{L-1}$.

# %%
L2 = 200  # several chunks of 64 steps, and a length that is not a power of two
args = [
    rng.standard_normal((1, dim, L2)),
    rng.standard_normal((1, dim, L2)),
    A_,
    rng.standard_normal((1, 1, N, L2)),  # the kernels take B, C as [batch, groups, N, L]
    rng.standard_normal((1, 1, N, L2)),
]
out_seq, last_seq, _ = K.selective_scan_forward(*args, delta_softplus=True)
out_par, last_par = K.selective_scan_associative(*args, delta_softplus=True)
print("max |sequential - associative|: out", np.abs(out_seq - out_par).max(),
      " last state", np.abs(last_seq - last_par).max())  # fmt: skip
# the two sum the same products in a different order: float64 rounding, ~1e-15 relative
assert np.allclose(out_seq, out_par, rtol=1e-12, atol=1e-12)
assert np.allclose(last_seq, last_par, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## The backward is a scan in reverse
#
# Let $g_t = \partial \mathcal{L} / \partial h_t$ (the total derivative, through every later step). $h_t$
# enters $y_t$ directly and $h_{t+1}$ through $a_{t+1}$, so (with $\bar y_t = \bar{o}_t \operatorname{silu}(z_t)$)
#
# $$g_{L-1} = C_{L-1}\,\bar y_{L-1}, \qquad g_t = C_t\,\bar y_t + a_{t+1} \odot g_{t+1} ,$$
#
# the same recurrence run backwards in time. Every input gradient is then local to one step:
#
# $$\bar u_t = D\bar y_t + \Delta_t \langle g_t, B_t\rangle, \quad
# \bar\Delta_t = \langle g_t,\; B_t u_t + A \odot a_t \odot h_{t-1}\rangle, \quad
# \bar A = \sum_t g_t \odot \Delta_t a_t \odot h_{t-1},$$
#
# $$\bar B_t = \sum_{d} g_t \Delta_t u_t, \qquad \bar C_t = \sum_d \bar y_t\, h_t, \qquad
# \bar\delta_t = \bar\Delta_t\, \sigma(\delta_t + \beta) \;\;(\text{softplus}' = \sigma).$$
#
# tinyllm's backward never differentiates through the $L$ steps with autograd: it keeps only
# the state entering each chunk of 64 steps and recomputes $h$ one chunk at a time. Below,
# the reverse scan in NumPy (no $z$, no $D$, for brevity) against tinyllm's gradients, then
# `tinyllm.gradcheck` on every input with every option switched on, over a length that
# crosses a chunk boundary.

# %%
u, delta, A, Bm, Cm = (T(x, requires_grad=True) for x in (u_, delta_, A_, B_, C_))
dout = rng.standard_normal((batch, dim, L))
F.selective_scan(u, delta, A, Bm, Cm, delta_softplus=True).backward(T(dout))

Dt = softplus(delta_)  # [batch, dim, L]
a = np.exp(Dt[..., None] * A_[:, None, :])  # a_t, [batch, dim, L, N]
Bt, Ct = B_.transpose(0, 2, 1)[:, None], C_.transpose(0, 2, 1)[:, None]  # [batch, 1, L, N]
h = np.zeros((batch, dim, L, N))
for t in range(L):  # forward, keeping every state (fine at this size)
    prev = h[:, :, t - 1] if t else 0.0
    h[:, :, t] = a[:, :, t] * prev + (Dt[:, :, t] * u_[:, :, t])[..., None] * Bt[:, :, t]
g = np.zeros_like(h)
for t in reversed(range(L)):  # g_t = C_t dy_t + a_{t+1} g_{t+1}
    g[:, :, t] = Ct[:, :, t] * dout[:, :, t, None]
    if t + 1 < L:
        g[:, :, t] += a[:, :, t + 1] * g[:, :, t + 1]
h_prev = np.concatenate([np.zeros_like(h[:, :, :1]), h[:, :, :-1]], axis=2)
by_hand = {
    "u": Dt * (g * Bt).sum(-1),
    "delta": (g * (Bt * u_[..., None] + A_[:, None, :] * a * h_prev)).sum(-1)
    / (1 + np.exp(-delta_)),
    "A": (g * Dt[..., None] * a * h_prev).sum(axis=(0, 2)),
    "B": (g * (Dt * u_)[..., None]).sum(1).transpose(0, 2, 1),
    "C": (dout[..., None] * h).sum(1).transpose(0, 2, 1),
}
for name, tensor in zip(by_hand, (u, delta, A, Bm, Cm)):
    err = np.abs(by_hand[name] - tensor.grad.numpy()).max()
    print(f"d{name}: max |reverse scan by hand - tinyllm| = {err:.1e}")
    assert np.allclose(by_hand[name], tensor.grad.numpy(), rtol=1e-10, atol=1e-12)

# every input, every option, L = 70 > one chunk of 64: float64 finite differences
L3 = 70
shapes = ((1, 2, L3), (1, 2, L3), (2, 3), (1, 3, L3), (1, 3, L3), (2,), (1, 2, L3), (2,))
arrays = [rng.standard_normal(s) for s in shapes]  # u, delta, A, B, C, D, z, delta_bias
arrays[2] = -np.abs(arrays[2]) - 0.1  # A < 0
inputs = [T(x, requires_grad=True) for x in arrays]


def full_scan(u, delta, A, B, C, D, z, bias):
    out, last = F.selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True,
                                 return_last_state=True)  # fmt: skip
    return out, last  # the last state's gradient (dlast) is checked too


assert tinyllm.gradcheck(full_scan, inputs)
print("gradcheck passed: selective_scan (u, delta, A, B, C, D, z, delta_bias; out and h_L)")

# %% [markdown]
# ## The causal depthwise convolution
#
# Before the scan, each channel is convolved with its own width-$W$ filter that sees only the
# past (bias $c$): $\;\text{out}_t = c + \sum_{k=0}^{W-1} w_k\, x_{t-(W-1)+k}$ ($x_s = 0$ for $s < 0$). Its
# backward is the correlation with the same filter, flipped, and the weight gradient the
# correlation of the output gradient with the input:
#
# $$\bar x_s = \sum_k w_k\, \bar{o}_{s + (W-1) - k}, \qquad \bar w_k = \sum_t \bar{o}_t\, x_{t-(W-1)+k}, \qquad \bar c = \sum_t \bar o_t .$$

# %%
W = 4
x_, w_, bias_c = rng.standard_normal((2, 3, 9)), rng.standard_normal((3, W)), rng.standard_normal(3)
padded = np.concatenate([np.zeros((2, 3, W - 1)), x_], axis=2)  # x_s = 0 for s < 0
naive = np.stack([bias_c + (padded[:, :, t : t + W] * w_).sum(-1) for t in range(9)], axis=2)
conv = F.causal_conv1d(T(x_), T(w_), T(bias_c)).numpy()
assert np.allclose(conv, naive, atol=1e-12)
x_future = x_.copy()
x_future[:, :, 5:] += 100.0  # change the future: outputs up to t = 4 must not move
moved = F.causal_conv1d(T(x_future), T(w_), T(bias_c)).numpy() - conv
assert np.abs(moved[:, :, :5]).max() == 0.0
x, w, c = (T(v, requires_grad=True) for v in (x_, w_, bias_c))
for act in (None, "silu"):
    assert tinyllm.gradcheck(lambda x, w, b, act=act: F.causal_conv1d(x, w, b, act), [x, w, c])
print("causal_conv1d: equals the naive loop, is causal; gradcheck passed (with and without silu)")

# %% [markdown]
# ## What $\Delta$ selects: the impulse response
#
# Fed a single impulse $u_0 = 1$ with constant $\Delta$, $B$, $C$, the scan's output is the closed form
#
# $$y_t = \sum_n C_n\, e^{t\,\Delta A_n}\, \Delta B_n ,$$
#
# a sum of exponentials: a small step remembers the impulse for many tokens, a large step
# takes it in strongly and forgets it within a few. Each curve below is the scan's output,
# checked against the closed form.

# %%
L4, N4 = 60, 4
A4 = -np.arange(1.0, N4 + 1)[None, :]  # S4D-real initialization: A = -(1, 2, .., N)
impulse = np.zeros((1, 1, L4))
impulse[0, 0, 0] = 1.0
Bc, Cc = np.ones((1, N4, L4)), np.full((1, N4, L4), 1.0 / N4)
fig, ax = plt.subplots(figsize=(6, 3.5))
for step in (0.02, 0.1, 0.5, 1.5):
    y = F.selective_scan(T(impulse), T(np.full((1, 1, L4), step)), T(A4), T(Bc), T(Cc)).numpy()
    closed = (np.exp(np.arange(L4)[:, None] * step * A4) * step).sum(1) / N4
    assert np.allclose(y[0, 0], closed, rtol=1e-12, atol=1e-15)
    ax.semilogy(np.arange(L4), y[0, 0], label=f"$\\Delta$ = {step}")
ax.set_xlabel("steps after the impulse")
ax.set_ylabel("output $y_t$")
ax.set_ylim(1e-8, 2)
ax.legend()
plt.show()

# %% [markdown]
# ## A tiny MambaLM: decoding one token at a time equals the full forward
#
# At inference a Mamba block needs only two small states per layer: the last $W$ inputs of
# the convolution and $h \in \mathbb{R}^{d_{\text{inner}} \times N}$. `MambaLM.step` advances them by one token
# in constant time (no KV cache that grows with the context). Its logits must equal the full
# forward's at every position. The whole model's gradient is also checked, parameter by
# parameter.

# %%
tinyllm.manual_seed(0)
lm = MambaLM(MambaConfig(vocab_size=32, d_model=8, n_layer=2, d_state=4, d_conv=3)).double()
tokens = rng.integers(0, 32, size=(2, 12))
with tinyllm.no_grad():
    full = lm(T(tokens)).numpy()  # [batch, L, V]
states = lm.new_states(batch=2)
stepped = np.stack([lm.step(tokens[:, t], states) for t in range(12)], axis=1)
print("max |step - full forward| over 12 positions:", np.abs(stepped - full).max())
assert np.allclose(stepped, full, rtol=1e-10, atol=1e-12)

targets = T(rng.integers(0, 32, size=(2, 12)))
rows = gradcheck_parameters(
    lm, lambda: F.cross_entropy(lm(T(tokens)).reshape(-1, 32), targets.reshape(-1)),
    max_elements=16,  # larger parameters: along 3 random directions each
    n_directions=3,
)  # fmt: skip
assert all(r["passed"] for r in rows)
print(f"gradcheck passed on all {len(rows)} parameters of the MambaLM")
