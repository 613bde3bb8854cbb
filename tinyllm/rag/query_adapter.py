"""A near-identity linear map on query embeddings, fitted with a multi-positive InfoNCE loss.

The passage embeddings stay fixed (the store is not re-embedded); only the query vector q
(unit, D) of a frozen encoder is mapped:

    z = q (I + Δ),          u = z / ||z||,          Δ ∈ R^{D×D}, Δ = 0 is the identity.

For training queries q_i with positive passages P_i (e.g. the passages of the topics that
answer it) among candidate passages p_1 .. p_M (unit rows), logits l_ij = s u_i · p_j with a
fixed scale s (1 / temperature), the loss is the mean multi-positive InfoNCE plus a pull to
the identity:

    L(Δ) = (1/N) Σ_i [ logsumexp_j l_ij − logsumexp_{j ∈ P_i} l_ij ] + (λ/2) ||Δ||_F².

The loss is built from the engine's ops on :class:`tinyllm.Tensor` (matmul, sum, sqrt,
masked_fill, logsumexp, mean), and ∂L/∂Δ comes from its autograd (``loss.backward()``); the
tests check it against float64 central differences of a plain NumPy copy of L. With
``form="diagonal"`` Δ = diag(δ), δ ∈ R^D (a per-dimension rescaling, D parameters instead
of D²): z = q + q ⊙ δ.

:func:`fit_query_adapter` minimises L with SciPy's L-BFGS from Δ = 0, fed the engine's loss
and gradient (deterministic: no random state). The result is a :class:`QueryAdapter`, saved
as plain arrays (no pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tinyllm.functional as F
from tinyllm import backend
from tinyllm.grad_mode import enable_grad
from tinyllm.rag.persistence import load_arrays, save_arrays
from tinyllm.rag.similarity import normalize
from tinyllm.tensor import Tensor

# The logit given to passages outside P_i in the positives' logsumexp. Every row has a
# positive, so the row's max m is a real logit (|l| <= s for unit rows) and exp(HIDDEN_LOGIT - m)
# is exactly 0 in float32 and float64: the loss and gradient of -inf, without an infinite
# value in the graph (which ``tinyllm.detect_anomaly()`` rightly stops at).
HIDDEN_LOGIT = -1e30


def _check_inputs(
    function: str, queries: np.ndarray, passages: np.ndarray, positives: np.ndarray
) -> None:
    if queries.ndim != 2 or passages.ndim != 2 or queries.shape[1] != passages.shape[1]:
        raise ValueError(
            f"{function}: queries {queries.shape} and passages {passages.shape} must be "
            "2-D with the same width"
        )
    if positives.shape != (queries.shape[0], passages.shape[0]):
        raise ValueError(
            f"{function}: positives has shape {positives.shape}, expected "
            f"{(queries.shape[0], passages.shape[0])} (queries x passages)"
        )
    if not positives.any(axis=1).all():
        empty = int(np.flatnonzero(~positives.any(axis=1))[0])
        raise ValueError(f"{function}: query {empty} has no positive passage")


def infonce_loss(
    delta: Tensor,
    queries: Tensor,
    passages: Tensor,
    positives: np.ndarray,
    scale: float = 20.0,
    weight_decay: float = 0.0,
) -> Tensor:
    """L(Δ) of the module docstring as a 0-d engine Tensor (differentiable in ``delta``).

    z = q (I + Δ) (or q + q ⊙ δ), u = z / sqrt(Σ_d z²), l = s u pᵀ, then
    L = mean_i [logsumexp_j l_ij − logsumexp_j (l_ij if j ∈ P_i else −∞)] + (λ/2) Σ Δ².
    ``queries`` (N, D), ``passages`` (M, D), ``positives`` (N, M) boolean; no input checks
    (see :func:`infonce_loss_and_grad`).
    """
    mapped = F.matmul(queries, delta) if delta.ndim == 2 else queries * delta
    z = queries + mapped
    u = z / F.sqrt(F.sum(z * z, dim=1, keepdim=True))
    logits = F.matmul(u, passages.t()) * scale
    outside = np.logical_not(positives)
    hidden = F.masked_fill(logits, outside, HIDDEN_LOGIT)  # as -inf, but finite
    per_query = F.logsumexp(logits, 1) - F.logsumexp(hidden, 1)
    return F.mean(per_query) + F.sum(delta * delta) * (0.5 * weight_decay)


def infonce_loss_and_grad(
    delta: np.ndarray,
    queries: np.ndarray,
    passages: np.ndarray,
    positives: np.ndarray,
    scale: float = 20.0,
    weight_decay: float = 0.0,
) -> tuple[float, np.ndarray]:
    """``(L(Δ), ∂L/∂Δ)``: :func:`infonce_loss` on engine Tensors, the gradient from
    ``backward()``. ``queries`` (N, D), ``passages`` (M, D), ``positives`` (N, M) boolean,
    ``delta`` (D, D), or (D,) for the diagonal form."""
    positives = np.asarray(positives, dtype=bool)
    _check_inputs("infonce_loss_and_grad", queries, passages, positives)
    d = queries.shape[1]
    if delta.shape not in ((d, d), (d,)):
        raise ValueError(
            f"infonce_loss_and_grad: delta has shape {delta.shape}, expected {(d, d)} or {(d,)}"
        )
    return _loss_and_grad(delta, Tensor(queries), Tensor(passages), positives, scale, weight_decay)


def _loss_and_grad(
    delta: np.ndarray,
    queries: Tensor,
    passages: Tensor,
    positives: np.ndarray,
    scale: float,
    weight_decay: float,
) -> tuple[float, np.ndarray]:
    """One forward and backward through the engine: L and ∂L/∂Δ (shape of ``delta``)."""
    leaf = Tensor(delta, requires_grad=True)
    with enable_grad():
        loss = infonce_loss(leaf, queries, passages, positives, scale, weight_decay)
        loss.backward()
    return float(loss.item()), backend.to_numpy(leaf.grad.data)


class QueryAdapter:
    """``q -> normalize(q (I + Δ))`` on rows of query embeddings.

    >>> adapter = QueryAdapter(np.zeros((3, 3)))
    >>> adapter(np.array([[3.0, 0.0, 4.0]])).round(2).tolist()
    [[0.6, 0.0, 0.8]]
    """

    def __init__(self, delta: np.ndarray, meta: dict | None = None) -> None:
        delta = np.asarray(delta)
        if delta.ndim not in (1, 2) or delta.shape[0] != delta.shape[-1]:
            raise ValueError(
                f"QueryAdapter: delta must be square (D, D) or diagonal (D,), got {delta.shape}"
            )
        self.delta = delta
        self.meta = dict(meta or {})

    @property
    def dim(self) -> int:
        return self.delta.shape[0]

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f"QueryAdapter: expected vectors of shape (n, {self.dim}), got {vectors.shape}"
            )
        delta = self.delta.astype(vectors.dtype)
        z = vectors + (vectors @ delta if delta.ndim == 2 else vectors * delta)
        return normalize(z).astype(vectors.dtype)

    def save(self, path: str | Path) -> Path:
        """Write Δ (float32) and the metadata to ``path`` (``.npz``, atomic, no pickle)."""
        meta = {"type": type(self).__name__, **self.meta}
        return save_arrays(path, {"delta": self.delta.astype(np.float32)}, meta)

    @classmethod
    def load(cls, path: str | Path) -> QueryAdapter:
        arrays, meta = load_arrays(path)
        if meta.get("type") != cls.__name__:
            raise ValueError(f"QueryAdapter.load: {path} holds a {meta.get('type')!r}")
        meta.pop("type")
        meta.pop("format_version", None)
        return cls(arrays["delta"], meta)


def fit_query_adapter(
    queries: np.ndarray,
    passages: np.ndarray,
    positives: np.ndarray,
    scale: float = 20.0,
    weight_decay: float = 1e-2,
    max_iter: int = 200,
    form: str = "full",
) -> QueryAdapter:
    """Minimise L(Δ) (module docstring) with SciPy's L-BFGS from Δ = 0, in float64, on the
    engine's loss and autograd gradient (:func:`infonce_loss`); ``form`` is ``"full"``
    (Δ ∈ R^{D×D}) or ``"diagonal"`` (Δ = diag(δ)). Deterministic: the same inputs
    give the same Δ bit for bit on one machine and BLAS."""
    from scipy.optimize import minimize

    queries = np.asarray(queries, dtype=np.float64)
    passages = np.asarray(passages, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    _check_inputs("fit_query_adapter", queries, passages, positives)
    if weight_decay < 0 or scale <= 0:
        raise ValueError(
            f"fit_query_adapter: need weight_decay >= 0 and scale > 0, got {weight_decay}, {scale}"
        )
    if form not in ("full", "diagonal"):
        raise ValueError(f"fit_query_adapter: form must be 'full' or 'diagonal', got {form!r}")
    d = queries.shape[1]
    shape = (d, d) if form == "full" else (d,)
    query_tensor, passage_tensor = Tensor(queries), Tensor(passages)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        """L and ∂L/∂Δ (flattened) at Δ = ``flat``, from the engine's forward and backward."""
        loss, grad = _loss_and_grad(
            flat.reshape(shape), query_tensor, passage_tensor, positives, scale, weight_decay
        )
        return loss, grad.ravel()

    result = minimize(
        objective,
        np.zeros(int(np.prod(shape))),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    meta = {
        "form": form,
        "scale": scale,
        "weight_decay": weight_decay,
        "max_iter": max_iter,
        "iterations": int(result.nit),
        "loss": float(result.fun),
        "queries": int(queries.shape[0]),
    }
    return QueryAdapter(result.x.reshape(shape), meta)
