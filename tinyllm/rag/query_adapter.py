"""A near-identity linear map on query embeddings, fitted with a multi-positive InfoNCE loss.

The passage embeddings stay fixed (the store is not re-embedded); only the query vector q
(unit, D) of a frozen encoder is mapped:

    z = q (I + Δ),          u = z / ||z||,          Δ ∈ R^{D×D}, Δ = 0 is the identity.

For training queries q_i with positive passages P_i (e.g. the passages of the topics that
answer it) among candidate passages p_1 .. p_M (unit rows), logits l_ij = s u_i · p_j with a
fixed scale s (1 / temperature), the loss is the mean multi-positive InfoNCE plus a pull to
the identity:

    L(Δ) = (1/N) Σ_i [ logsumexp_j l_ij − logsumexp_{j ∈ P_i} l_ij ] + (λ/2) ||Δ||_F².

Gradient (written by hand, checked against float64 finite differences in the tests): with
g_ij = softmax_j(l_i) − softmax_{j ∈ P_i}(l_i) (zero outside P_i in the second term),

    ∂L/∂u_i = (s/N) Σ_j g_ij p_j,    ∂L/∂z_i = (I − u_i u_iᵀ) ∂L/∂u_i / ||z_i||,
    ∂L/∂Δ   = Σ_i q_iᵀ ∂L/∂z_i + λ Δ.

With ``form="diagonal"`` Δ = diag(δ), δ ∈ R^D (a per-dimension rescaling, D parameters
instead of D²): ∂L/∂δ = Σ_i q_i ⊙ ∂L/∂z_i + λ δ.

:func:`fit_query_adapter` minimises L with L-BFGS from Δ = 0 (deterministic: no random
state). The result is a :class:`QueryAdapter`, saved as plain arrays (no pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyllm.rag.persistence import load_arrays, save_arrays
from tinyllm.rag.similarity import normalize


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


def _logsumexp(x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise logsumexp of ``x`` (over ``mask`` when given) and the matching softmax."""
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    top = x.max(axis=1, keepdims=True)
    weights = np.exp(x - top)
    total = weights.sum(axis=1, keepdims=True)
    return (top + np.log(total))[:, 0], weights / total


def infonce_loss_and_grad(
    delta: np.ndarray,
    queries: np.ndarray,
    passages: np.ndarray,
    positives: np.ndarray,
    scale: float = 20.0,
    weight_decay: float = 0.0,
) -> tuple[float, np.ndarray]:
    """``(L(Δ), ∂L/∂Δ)`` of the module docstring. ``queries`` (N, D), ``passages`` (M, D),
    ``positives`` (N, M) boolean, ``delta`` (D, D), or (D,) for the diagonal form."""
    positives = np.asarray(positives, dtype=bool)
    _check_inputs("infonce_loss_and_grad", queries, passages, positives)
    d = queries.shape[1]
    if delta.shape not in ((d, d), (d,)):
        raise ValueError(
            f"infonce_loss_and_grad: delta has shape {delta.shape}, expected {(d, d)} or {(d,)}"
        )
    n = queries.shape[0]
    z = queries + (queries @ delta if delta.ndim == 2 else queries * delta)
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    u = z / norm
    logits = scale * (u @ passages.T)
    all_lse, all_soft = _logsumexp(logits)
    pos_lse, pos_soft = _logsumexp(logits, positives)
    loss = float(np.mean(all_lse - pos_lse)) + 0.5 * weight_decay * float(np.sum(delta * delta))
    grad_u = (scale / n) * ((all_soft - pos_soft) @ passages)
    grad_z = (grad_u - u * np.sum(u * grad_u, axis=1, keepdims=True)) / norm
    grad = queries.T @ grad_z if delta.ndim == 2 else np.sum(queries * grad_z, axis=0)
    return loss, grad + weight_decay * delta


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
    """Minimise L(Δ) (module docstring) with L-BFGS from Δ = 0, in float64; ``form`` is
    ``"full"`` (Δ ∈ R^{D×D}) or ``"diagonal"`` (Δ = diag(δ)). Deterministic: the same inputs
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

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = infonce_loss_and_grad(
            flat.reshape(shape), queries, passages, positives, scale, weight_decay
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
