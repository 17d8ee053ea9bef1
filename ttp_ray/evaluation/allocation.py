"""Compute-optimal N per user: spend a candidate budget where the predicted Best-of-N gain is steepest.

Problem: choose N_u on a grid for every user u (n_u queries each) to maximise Σ_u n_u·gain_u(N_u) − λ·Σ_u n_u·N_u
subject to Σ_u n_u·N_u <= budget. For concave gain curves, taking steps in decreasing order of marginal gain per
candidate (greedy) is optimal up to the last step that does not fit (the classic fractional-knapsack bound: the
shortfall is at most one step's gain). Curves need not be concave (a non-monotone RM curve, a hacked user), so
the greedy runs on each curve's upper concave hull: a hull vertex is never worse than the grid points it skips,
and steps with slope <= λ (or <= 0) are never taken.

Allocations are chosen on *predicted* curves (the per-user law) and scored on the *exact observed* per-user
curves, next to uniform N at the same compute and to the allocation an oracle of the true curves would pick.
Caveat: both curves come from the same evaluation pools (in-sample); a deployment would estimate ρ_u and the
oracle gains from the user's history (e.g. the rm_train pools).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttp_ray.errors import TTPValidationError


def user_curves(per_query: np.ndarray, user_codes: np.ndarray, n_users: int) -> np.ndarray:
    """Mean over each user's queries of a per-query curve: (Q, K) -> (U, K)."""
    counts = np.bincount(user_codes, minlength=n_users).astype(np.float64)
    sums = np.stack([np.bincount(user_codes, per_query[:, k], minlength=n_users)
                     for k in range(per_query.shape[1])], axis=1)
    return sums / np.maximum(counts, 1.0)[:, None]


@dataclass(frozen=True)
class Segments:
    """Rising hull segments of every user, sorted by decreasing slope (marginal gain per query-candidate)."""

    slope: np.ndarray  # (S,)
    user: np.ndarray  # (S,)
    start: np.ndarray  # (S,) grid index the step leaves
    end: np.ndarray  # (S,) grid index the step reaches


def hull_segments(gains: np.ndarray, grid: np.ndarray, max_index: np.ndarray | None = None) -> Segments:
    """Upper concave hull of every user's curve (gift wrapping, vectorised over users), rising part only.

    From the current vertex, the next vertex is the grid point with the steepest slope; on ties the nearest
    one, so a straight run of points stays a run of small steps (the greedy may then stop part-way along it);
    wrapping stops when no later point is higher.
    """
    n_users, k = gains.shape
    x = grid.astype(np.float64)
    max_index = np.full(n_users, k - 1) if max_index is None else np.asarray(max_index)
    valid = np.arange(k)[None, :] <= max_index[:, None]
    cur = np.zeros(n_users, dtype=np.int64)
    last_slope = np.full(n_users, np.inf)
    active = max_index > 0
    parts: list[tuple[np.ndarray, ...]] = []
    while active.any():
        us = np.flatnonzero(active)
        a = cur[us]
        dx = x[None, :] - x[a][:, None]
        ok = (dx > 0) & valid[us]
        slope = np.where(ok, (gains[us] - gains[us, a][:, None]) / np.where(ok, dx, 1.0), -np.inf)
        best = slope.max(axis=1)
        rising = best > 0
        tie = ok & (slope >= (best - 1e-12 * np.maximum(1.0, np.abs(best)))[:, None])
        nxt = np.argmax(tie, axis=1)  # nearest point on the steepest chord: collinear points stay steps
        us, a, nxt, best = us[rising], a[rising], nxt[rising], best[rising]
        best = np.minimum(best, last_slope[us])  # absorb 1e-12 tie noise: slopes never increase along a user
        last_slope[us] = best
        parts.append((best, us, a, nxt))
        cur[us] = nxt
        active[:] = False
        active[us] = nxt < max_index[us]
    if not parts:
        e = np.zeros(0, dtype=np.int64)
        return Segments(np.zeros(0), e, e, e)
    slope, user, start, end = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.lexsort((start, user, -slope))
    return Segments(slope[order], user[order], start[order], end[order])


def greedy_allocate(
    gains: np.ndarray,
    grid: np.ndarray,
    n_queries: np.ndarray,
    budget: float,
    *,
    lam: float = 0.0,
    max_index: np.ndarray | None = None,
    segments: Segments | None = None,
) -> np.ndarray:
    """Greedy on concave hulls. Returns the chosen grid index per user (U,).

    Args:
        gains: (U, K) predicted gain per query of each user at each grid point (any baseline).
        grid: (K,) increasing N values; every user starts at grid[0].
        n_queries: (U,) queries per user (cost and gain weights).
        budget: total candidates to spend over all queries.
        lam: price per candidate; steps with marginal gain per candidate <= lam are skipped.
        max_index: (U,) last usable grid index per user (a user's smallest pool caps its N).
        segments: precomputed `hull_segments(gains, grid, max_index)` (reused across budgets).
    """
    n_users, k = gains.shape
    if grid.shape != (k,) or (np.diff(grid) <= 0).any():
        raise TTPValidationError("`grid` must be strictly increasing with one entry per gains column",
                                 parameter="grid", value=grid.tolist())
    base_cost = float((n_queries * grid[0]).sum())
    if budget < base_cost - 1e-9:
        raise TTPValidationError(f"`budget` must cover N={grid[0]} for every query ({base_cost:g}), got {budget:g}",
                                 parameter="budget", value=budget)
    seg = segments if segments is not None else hull_segments(gains, grid, max_index)
    keep = seg.slope > lam
    user, start, end = seg.user[keep], seg.start[keep], seg.end[keep]
    cost = n_queries[user] * (grid[end] - grid[start])
    left = budget - base_cost + 1e-9
    chosen = np.zeros(n_users, dtype=np.int64)
    # Phase 1: the longest prefix (in slope order) that fits. Each user's steps appear in order in it.
    n_pref = int(np.searchsorted(np.cumsum(cost), left, side="right"))
    np.maximum.at(chosen, user[:n_pref], end[:n_pref])
    left -= float(cost[:n_pref].sum())
    # Phase 2: the first step that did not fit blocks its user; keep filling with later steps that fit.
    p = n_pref
    while p < user.size:
        rest = slice(p + 1, None)
        ok = (chosen[user[rest]] == start[rest]) & (cost[rest] <= left)
        if not ok.any():
            break
        p = p + 1 + int(np.argmax(ok))
        chosen[user[p]] = end[p]
        left -= float(cost[p])
    return chosen


def evaluate_allocation(
    predicted_gain: np.ndarray,
    exact_user_curves: np.ndarray,
    grid: np.ndarray,
    n_queries: np.ndarray,
    budgets: list[int],
    *,
    lam: float = 0.0,
    max_index: np.ndarray | None = None,
) -> list[dict[str, float | int | dict[int, int]]]:
    """For each budget b (mean candidates per query): uniform N=b vs the law's allocation vs the oracle one.

    Utilities are query-weighted means of the exact per-user curves `exact_user_curves` (U, K) at the chosen N.
    """
    n_users, k = exact_user_curves.shape
    max_index = np.full(n_users, k - 1) if max_index is None else max_index
    total_q = float(n_queries.sum())
    rows = np.arange(n_users)

    def utility(idx: np.ndarray) -> tuple[float, float]:
        return (float((n_queries * exact_user_curves[rows, idx]).sum() / total_q),
                float((n_queries * grid[idx]).sum() / total_q))

    out: list[dict[str, float | int | dict[int, int]]] = []
    seg_pred = hull_segments(predicted_gain, grid, max_index)
    seg_exact = hull_segments(exact_user_curves, grid, max_index)
    for b in budgets:
        uniform_idx = np.minimum(np.searchsorted(grid, b, side="right") - 1, max_index)
        u_uni, n_uni = utility(uniform_idx)
        budget_total = float((n_queries * grid[uniform_idx]).sum())  # equal compute, even where pools cap N
        alloc = greedy_allocate(predicted_gain, grid, n_queries, budget_total, lam=lam, segments=seg_pred)
        best = greedy_allocate(exact_user_curves, grid, n_queries, budget_total, lam=lam, segments=seg_exact)
        u_alloc, n_alloc = utility(alloc)
        u_best, n_best = utility(best)
        out.append({
            "budget": int(b),
            "uniform": u_uni,
            "allocated": u_alloc,
            "oracle_allocated": u_best,
            "gain_vs_uniform": u_alloc - u_uni,
            "mean_n_uniform": n_uni,
            "mean_n_allocated": n_alloc,
            "mean_n_oracle_allocated": n_best,
            "net_uniform": u_uni - lam * n_uni,
            "net_allocated": u_alloc - lam * n_alloc,
            "n_distribution": {int(n): int(c) for n, c in zip(*np.unique(grid[alloc], return_counts=True),
                                                                  strict=True)},
        })
    return out
