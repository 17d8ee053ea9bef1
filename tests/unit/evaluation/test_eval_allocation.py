"""Compute-optimal N: hull correctness, greedy = brute force on concave curves, budget and λ respected."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttp_ray.errors import TTPValidationError
from ttp_ray.evaluation import allocation as al


def _brute_force(gains: np.ndarray, grid: np.ndarray, n_q: np.ndarray, budget: float, lam: float) -> float:
    best = -np.inf
    for idx in itertools.product(range(grid.size), repeat=gains.shape[0]):
        idx = np.asarray(idx)
        cost = float((n_q * grid[idx]).sum())
        if cost <= budget + 1e-9:
            best = max(best, float((n_q * gains[np.arange(idx.size), idx]).sum()) - lam * cost)
    return best


def _value(gains, grid, n_q, idx, lam=0.0):
    return float((n_q * gains[np.arange(idx.size), idx]).sum()) - lam * float((n_q * grid[idx]).sum())


curves = st.lists(st.lists(st.floats(0, 1), min_size=5, max_size=5), min_size=3, max_size=3)


@settings(max_examples=40, deadline=None)
@given(increments=curves, budget=st.integers(3, 15), lam=st.sampled_from([0.0, 0.05]))
def test_greedy_is_optimal_for_concave_unit_steps(increments, budget, lam) -> None:
    inc = -np.sort(-np.asarray(increments), axis=1)  # decreasing increments: concave curves
    gains = np.concatenate([np.zeros((3, 1)), np.cumsum(inc[:, 1:], axis=1)], axis=1)
    grid = np.arange(1, 6)
    n_q = np.ones(3)
    idx = al.greedy_allocate(gains, grid, n_q, budget, lam=lam)
    assert (n_q * grid[idx]).sum() <= budget
    assert _value(gains, grid, n_q, idx, lam) == pytest.approx(_brute_force(gains, grid, n_q, budget, lam), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(values=curves, budget=st.integers(3, 15))
def test_hull_greedy_on_non_concave_curves_is_near_optimal(values, budget) -> None:
    gains = np.asarray(values)
    gains -= gains[:, :1]
    grid = np.arange(1, 6)
    n_q = np.array([1.0, 2.0, 1.0])
    budget = max(budget, 4)
    idx = al.greedy_allocate(gains, grid, n_q, budget)
    assert (n_q * grid[idx]).sum() <= budget
    # fractional-knapsack bound: short of the optimum by at most one (weighted) step of one user
    max_step = float((n_q[:, None] * (gains.max(1, keepdims=True) - gains[:, :1])).max())
    assert _value(gains, grid, n_q, idx) >= _brute_force(gains, grid, n_q, budget, 0.0) - max_step - 1e-9


def test_hull_segments_majorise_the_curve() -> None:
    rng = np.random.default_rng(0)
    gains = np.cumsum(rng.normal(0.01, 0.03, (50, 30)), axis=1)
    grid = np.arange(1, 31)
    seg = al.hull_segments(gains, grid)
    assert np.all(seg.slope > 0) and np.all(np.diff(seg.slope) <= 1e-15)
    for u in range(50):
        mine = seg.user == u
        verts = np.r_[0, seg.end[mine]] if mine.any() else np.array([0])
        assert np.array_equal(np.sort(seg.start[mine]), seg.start[mine])
        hull = np.interp(grid[: verts[-1] + 1], grid[verts], gains[u, verts])
        assert np.all(hull >= gains[u, : verts[-1] + 1] - 1e-12)
        assert np.all(gains[u, verts[-1]:] <= gains[u, verts[-1]] + 1e-12)  # nothing higher later


def test_budget_must_cover_n1_and_grid_checked() -> None:
    gains = np.zeros((2, 3))
    with pytest.raises(TTPValidationError, match="budget"):
        al.greedy_allocate(gains, np.array([1, 2, 3]), np.array([1.0, 1.0]), 1.0)
    with pytest.raises(TTPValidationError, match="grid"):
        al.greedy_allocate(gains, np.array([1, 3, 2]), np.array([1.0, 1.0]), 6.0)


def test_evaluate_allocation_beats_uniform_with_true_curves() -> None:
    grid = np.arange(1, 9)
    c = np.log(grid)[None, :]
    exact = np.vstack([0.3 + 0.08 * c, 0.2 + 0.01 * c, 0.25 + 0.0 * c, 0.1 + 0.05 * c])
    n_q = np.array([3.0, 3.0, 2.0, 4.0])
    rows = al.evaluate_allocation(exact - exact[:, :1], exact, grid, n_q, [2, 4])
    for r in rows:
        assert r["mean_n_allocated"] <= r["budget"] + 1e-9
        assert r["allocated"] == pytest.approx(r["oracle_allocated"])
        assert r["allocated"] > r["uniform"]
        assert r["gain_vs_uniform"] == pytest.approx(r["allocated"] - r["uniform"])
    # the flat user (index 2) never gets more than one candidate
    assert rows[-1]["n_distribution"].get(1, 0) >= 1


def test_user_curves_average_queries() -> None:
    per_q = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(al.user_curves(per_q, np.array([0, 0, 1]), 2), [[2.0, 3.0], [5.0, 6.0]])
