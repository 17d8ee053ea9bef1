"""Is selector A better than selector B on this data, or is the gap just which users were drawn?

The seed spread measures RM-training noise; on small real evaluation sets (the commit tasks hold 3 queries per
author, 24-51 queries in all) the larger noise is which users and queries the evaluation happened to hold. Two
selectors are compared *paired* — both on the same pools — by the difference of their shares of the oracle gain
at one N, with a percentile interval from a cluster bootstrap that resamples users (a user's queries share the
user's history and style, so they are not independent draws). The difference is the same number as the
difference of the two methods' `oracle_gain_captured` in the report.

Pure numpy: the report (`training_free.finish_training_free`) feeds it per-query values at N = max.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ttp_ray.evaluation import bon

__all__ = ["exact_at", "paired_share_difference"]

_CHUNK = 256  # bootstrap resamples per matrix product: bounds memory at _CHUNK x users floats


def exact_at(golden: np.ndarray, scores: np.ndarray | None, offsets: np.ndarray, n: int) -> np.ndarray:
    """Per-query exact Best-of-N value at N = min(n, pool size) (ties averaged), for per-candidate scores;
    `scores=None` gives the oracle."""
    out = np.empty(offsets.size - 1)
    for q in range(out.size):
        lo, hi = int(offsets[q]), int(offsets[q + 1])
        s = None if scores is None else scores[None, lo:hi]
        out[q] = bon.exact_bon_matrix(golden[None, lo:hi], s, [min(n, hi - lo)])[0, 0]
    return out


def paired_share_difference(a: np.ndarray, b: np.ndarray, oracle: np.ndarray, pool_mean: np.ndarray,
                            user_codes: np.ndarray, *, aggregate: bon.Aggregate = "query",
                            resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Share of the oracle gain of A minus B, with a cluster-bootstrap interval over users.

    Args:
        a, b: per-query expected golden score of the two selectors' picks at the same N, shape (Q,).
        oracle, pool_mean: per-query oracle value at that N and the pool's mean golden score (N = 1).
        user_codes: (Q,) user index of each query; aggregate: the report's query weighting ("query" or "user").
    Returns:
        {"share_diff", "ci": [lo, hi], "level", "resamples", "unit": "user", "users", "queries",
        "a_better_users"}: share_diff = Σw(a − b) / Σw(oracle − pool_mean); `a_better_users` counts users whose
        own difference is positive. The interval is None with fewer than 2 users (nothing to resample).
    """
    a, b, oracle, pool_mean = (np.asarray(x, dtype=np.float64) for x in (a, b, oracle, pool_mean))
    codes = np.asarray(user_codes, dtype=np.int64)
    if not (a.shape == b.shape == oracle.shape == pool_mean.shape == codes.shape) or a.ndim != 1:
        raise ValueError(f"per-query arrays must share one shape (Q,), got {a.shape}, {b.shape}, "
                         f"{oracle.shape}, {pool_mean.shape}, {codes.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), got {level}")
    w = bon.query_weights(codes, aggregate)
    n_users = int(codes.max()) + 1 if codes.size else 0
    diff_u = np.bincount(codes, weights=w * (a - b), minlength=n_users)  # each user's weighted sums
    gain_u = np.bincount(codes, weights=w * (oracle - pool_mean), minlength=n_users)
    total_gain = float(gain_u.sum())
    out: dict[str, Any] = {"share_diff": float(diff_u.sum() / total_gain) if total_gain > 0 else None,
                           "ci": None, "level": level, "resamples": resamples, "unit": "user",
                           "users": n_users, "queries": int(a.size), "a_better_users": int((diff_u > 0).sum())}
    if out["share_diff"] is None or n_users < 2 or resamples < 1:
        return out
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, resamples, _CHUNK):
        r = min(_CHUNK, resamples - start)
        draws = rng.integers(0, n_users, size=(r, n_users))
        counts = np.zeros((r, n_users))
        np.add.at(counts, (np.repeat(np.arange(r), n_users), draws.ravel()), 1.0)
        g = counts @ gain_u
        stats.append(np.where(g > 0, (counts @ diff_u) / np.where(g > 0, g, 1.0), 0.0))
    boot = np.concatenate(stats)
    tail = (1.0 - level) / 2.0
    out["ci"] = [float(np.quantile(boot, tail)), float(np.quantile(boot, 1.0 - tail))]
    return out
