"""The unified scaling law (paper Prop. 4.4, INFERRED form) and a refined per-query variant, with fit metrics.

Paper law:      U(N) ≈ U(1) + G_oracle(N) · (1−α) · [(1−β)·ρ̄⁺ − β·ρ̄⁻]
Per-query law:  U(N) ≈ U(1) + Σ_q w_q · ρ_q · G_q(N)

G_oracle(N) is the measured (exact) oracle gain of the population, G_q(N) that of query q, and w_q the
aggregation weights of the observed curve. The per-query law applies Lemma 4.2 (gain = ρ·σ·c_N = ρ·G_oracle)
to every pool with its own oracle gain, so it keeps what the paper law averages away: that hacked or healthy
queries may have larger or smaller oracle headroom than average, and that collapsed users keep a residual ρ.
Derivation: docs/theory.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttp_ray.evaluation.diagnostics import FailureModes


def paper_law(u1: float, oracle_gain: np.ndarray, fm: FailureModes) -> np.ndarray:
    """U(1) + G_oracle(N)·(1−α)·[(1−β)ρ̄⁺ − βρ̄⁻] for the aggregated oracle gain curve (K,)."""
    alpha = 0.0 if not np.isfinite(fm.alpha) else fm.alpha
    effective_rho = (1.0 - alpha) * ((1.0 - fm.beta) * fm.rho_pos - fm.beta * fm.rho_neg)
    return u1 + np.asarray(oracle_gain, dtype=np.float64) * effective_rho


@dataclass(frozen=True)
class PerQueryLaw:
    """Prediction of the per-query law and its split over the diagnostic groups (each (K,))."""

    curve: np.ndarray
    healthy: np.ndarray  # contribution of healthy queries of non-collapsed users
    hacked: np.ndarray  # contribution of hacked queries (negative)
    collapsed: np.ndarray  # residual contribution of collapsed users' queries


def per_query_law(
    u1: float,
    rho_q: np.ndarray,
    oracle_gain_q: np.ndarray,
    weights: np.ndarray,
    fm: FailureModes,
) -> PerQueryLaw:
    """U(1) + Σ_q w_q ρ_q G_q(N); `oracle_gain_q` is (Q, K), `weights` (Q,) sums to 1."""
    contrib = (weights * rho_q)[:, None] * oracle_gain_q  # (Q, K)
    return PerQueryLaw(
        curve=u1 + contrib.sum(axis=0),
        healthy=contrib[fm.healthy_queries].sum(axis=0),
        hacked=contrib[fm.hacked_queries].sum(axis=0),
        collapsed=contrib[fm.collapsed_queries].sum(axis=0),
    )


def fit_quality(
    observed: np.ndarray,
    predicted: np.ndarray,
    *,
    scale: float | None = None,
    flat_fraction: float = 0.05,
) -> dict[str, float | bool | str | None]:
    """Agreement of a predicted curve with the observed one over the N grid.

    R² = 1 − Σ_N (obs − pred)² / Σ_N (obs − mean_N obs)²: the share of the curve's variation across N that the
    prediction explains. It is ill-posed for a (nearly) flat observed curve, i.e. one whose range is below
    `flat_fraction` × `scale` (`scale` = the oracle gain at the largest N; absolute 1e-12 if not given): then
    `r2` is None, `flat` is True and max_abs_error is the number to read. Errors are in golden units.
    """
    obs = np.asarray(observed, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    err = obs - pred
    max_abs = float(np.abs(err).max())
    spread = float(obs.max() - obs.min())
    tol = flat_fraction * scale if scale is not None and scale > 0 else 1e-12
    flat = spread < tol
    out: dict[str, float | bool | str | None] = {
        "r2": None,
        "max_abs_error": max_abs,
        "mean_abs_error": float(np.abs(err).mean()),
        "max_abs_error_rel": max_abs / scale if scale else None,
        "flat": bool(flat),
        "note": None,
    }
    if flat:
        out["note"] = (f"observed curve is flat (range {spread:.2e} < {flat_fraction:g} of the oracle gain): "
                       "R² is ill-posed, read max_abs_error")
    else:
        ss_tot = float(((obs - obs.mean()) ** 2).sum())
        out["r2"] = 1.0 - float((err**2).sum()) / ss_tot
    return out
