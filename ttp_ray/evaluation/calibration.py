"""Calibration of a Prob RM's σ on held-out pools, absolute and within query (docs/theory.md §3d)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["calibration"]


def calibration(mu: np.ndarray, sigma: np.ndarray, golden: np.ndarray,
                offsets: np.ndarray | None = None) -> dict[str, Any]:
    """How well a Prob RM's σ describes its own errors on held-out pools: mean Gaussian NLL of the golden
    scores, and the share of golden scores inside μ ± σ and μ ± 2σ (0.683 and 0.954 if calibrated).

    With `offsets` (query boundaries) the same figures are given `within_query` too: each query's level is
    profiled out first (its 1/σ²-weighted mean residual) and residuals are scaled by √(n/(n−1)), exactly as
    the within-query objective trains σ (docs/theory.md §3d). Selection only uses μ's differences inside a
    query, so for such RMs this is the calibration that matters; queries of one candidate are left out.
    """
    mu, g = np.asarray(mu, dtype=np.float64), np.asarray(golden, dtype=np.float64)
    s = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-12)
    out: dict[str, Any] = _gauss_fit(g - mu, s)
    if offsets is not None:
        sizes = np.diff(np.asarray(offsets))
        q = np.repeat(np.arange(sizes.size), sizes)
        w = 1.0 / s**2
        level = np.bincount(q, w * (g - mu), minlength=sizes.size) / np.bincount(q, w, minlength=sizes.size)
        keep = sizes[q] > 1
        n = sizes[q][keep].astype(np.float64)
        resid = (g - mu - level[q])[keep] * np.sqrt(n / (n - 1))
        out["within_query"] = _gauss_fit(resid, s[keep]) if keep.any() else None
    return out


def _gauss_fit(resid: np.ndarray, s: np.ndarray) -> dict[str, float]:
    z = np.abs(resid) / s
    nll = 0.5 * np.log(2 * np.pi * s**2) + 0.5 * z**2
    return {"nll": float(nll.mean()), "inside_1sigma": float((z <= 1).mean()),
            "inside_2sigma": float((z <= 2).mean()), "mean_sigma": float(s.mean())}
