"""Grouped correlations vs scipy, the 'constant → 0 with a flag' rule, ρ_u modes, α/β/ρ̄⁺/ρ̄⁻ on a hand example."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ttp_ray.errors import TTPValidationError
from ttp_ray.evaluation import diagnostics as dg


def _random_groups(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 12, 25)
    offsets = np.r_[0, np.cumsum(sizes)]
    g = np.round(rng.random(offsets[-1]), 1)  # ties
    s = np.round(g + rng.standard_normal(offsets[-1]), 1)
    return g, s, offsets, sizes


@pytest.mark.parametrize("kind", ["pearson", "spearman"])
def test_query_correlation_matches_scipy(kind: str) -> None:
    g, s, offsets, sizes = _random_groups()
    got = dg.query_correlation(g, s, offsets, kind)
    fn = stats.pearsonr if kind == "pearson" else stats.spearmanr
    for q in range(sizes.size):
        sl = slice(offsets[q], offsets[q + 1])
        if np.ptp(g[sl]) == 0 or np.ptp(s[sl]) == 0:
            assert got.rho[q] == 0.0 and not got.defined[q]
        else:
            assert got.rho[q] == pytest.approx(fn(g[sl], s[sl])[0], abs=1e-10)


def test_grouped_rank_matches_rankdata() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 200).astype(float)
    groups = rng.integers(0, 7, 200)
    ranks = dg.grouped_rank(x, groups)
    for k in range(7):
        np.testing.assert_allclose(ranks[groups == k], stats.rankdata(x[groups == k]))


def test_constant_scores_and_golden_are_flagged_not_nan() -> None:
    g = np.array([0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.1, 0.5, 0.9])
    s = np.array([1.0, 1.0, 1.0, 0.3, 0.1, 0.2, 0.1, 0.2, 0.3])
    c = dg.query_correlation(g, s, np.array([0, 3, 6, 9]))
    np.testing.assert_array_equal(c.rho[:2], [0.0, 0.0])
    assert c.const_score.tolist() == [True, False, False]
    assert c.const_golden.tolist() == [False, True, False]
    assert c.rho[2] == pytest.approx(1.0)
    assert not np.isnan(c.rho).any()


def test_user_rho_modes() -> None:
    # one user, two queries: scores track the query *level* only (difficulty) and are anti-correlated within
    g = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    s = np.array([0.3, 0.2, 0.1, 0.9, 0.8, 0.7])
    offsets = np.array([0, 3, 6])
    users = np.array([0, 0])
    pooled = dg.user_correlation(g, s, offsets, users, 1, mode="pooled")
    within = dg.user_correlation(g, s, offsets, users, 1, mode="within")
    mean_q = dg.user_correlation(g, s, offsets, users, 1, mode="mean_query")
    assert pooled.rho[0] > 0.5  # fooled by between-query differences
    assert within.rho[0] == pytest.approx(-1.0)
    assert mean_q.rho[0] == pytest.approx(-1.0)
    sp = dg.user_correlation(g, s, offsets, users, 1, mode="within", kind="spearman")
    assert sp.rho[0] == pytest.approx(-1.0)
    with pytest.raises(TTPValidationError, match="user_rho"):
        dg.user_correlation(g, s, offsets, users, 1, mode="median")  # type: ignore[arg-type]


def test_failure_modes_hand_example() -> None:
    # users: 0 healthy (3 queries), 1 collapsed (constant scores), 2 no golden variation (uninformative)
    rho_q = dg.Correlation(
        rho=np.array([0.8, 0.6, -0.4, 0.0, 0.0, 0.0]),
        const_score=np.array([False, False, False, True, True, False]),
        const_golden=np.array([False, False, False, False, False, True]),
    )
    rho_u = dg.Correlation(np.array([0.5, 0.0, 0.0]), np.array([False, True, False]), np.array([False, False, True]))
    users = np.array([0, 0, 0, 1, 1, 2])
    fm = dg.failure_modes(rho_q, rho_u, users, collapse_threshold=0.1)
    assert fm.alpha == pytest.approx(0.5)  # user 2 is not informative: 1 of 2 users collapsed
    assert fm.beta == pytest.approx(1 / 3)
    assert fm.rho_pos == pytest.approx(0.7)
    assert fm.rho_neg == pytest.approx(0.4)
    assert fm.collapsed_queries.tolist() == [False, False, False, True, True, False]
    s = fm.summary()
    assert s["n_collapsed_users"] == 1 and s["n_hacked_queries"] == 1 and s["n_const_score_users"] == 1


def test_failure_modes_empty_groups_give_zero_not_nan() -> None:
    rho_q = dg.Correlation(np.array([0.5, 0.4]), np.zeros(2, bool), np.zeros(2, bool))
    rho_u = dg.Correlation(np.array([0.45]), np.zeros(1, bool), np.zeros(1, bool))
    fm = dg.failure_modes(rho_q, rho_u, np.array([0, 0]))
    assert fm.beta == 0.0 and fm.rho_neg == 0.0 and fm.alpha == 0.0
