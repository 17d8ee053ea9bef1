"""Correlation diagnostics: ρ_q, ρ_u, collapse rate α, hacking rate β, ρ̄⁺ and ρ̄⁻ (paper §4).

Correlations are computed for many groups at once on flat arrays (bincount sums, two-pass centring for
stability), so ragged pools and users with any number of queries cost one pass over the candidates.
Undefined correlations (constant scores or constant golden within a group) are 0 with a flag, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ttp_ray.errors import TTPValidationError

CorrelationKind = Literal["pearson", "spearman"]
UserRhoMode = Literal["pooled", "mean_query", "within"]

# Relative spread below which a group's values count as constant (float noise, not signal).
CONST_RTOL = 1e-12


@dataclass(frozen=True)
class Correlation:
    """Per-group correlations; `rho` is 0 wherever a side is constant (see the flags)."""

    rho: np.ndarray  # (G,) float64, never NaN
    const_score: np.ndarray  # (G,) bool: the selector's scores don't vary in the group
    const_golden: np.ndarray  # (G,) bool: golden scores don't vary (no gain to realise; ρ undefined)

    @property
    def defined(self) -> np.ndarray:
        return ~(self.const_score | self.const_golden)

    @property
    def informative(self) -> np.ndarray:
        """Groups whose golden scores vary: there is something to select for, so ρ matters."""
        return ~self.const_golden


def _group_center(x: np.ndarray, groups: np.ndarray, n_groups: int, counts: np.ndarray) -> np.ndarray:
    means = np.bincount(groups, x, minlength=n_groups) / np.maximum(counts, 1)
    return x - means[groups]


def _is_const(centred: np.ndarray, raw: np.ndarray, groups: np.ndarray, n_groups: int,
              counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ss = np.bincount(groups, centred * centred, minlength=n_groups)
    scale = np.bincount(groups, raw * raw, minlength=n_groups) / np.maximum(counts, 1)
    return ss, ss <= (CONST_RTOL**2) * np.maximum(scale, 1.0) * np.maximum(counts, 1)


def grouped_pearson(golden: np.ndarray, score: np.ndarray, groups: np.ndarray, n_groups: int) -> Correlation:
    """Pearson correlation of `golden` and `score` within each group id in [0, n_groups)."""
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    gc = _group_center(golden, groups, n_groups, counts)
    sc = _group_center(score, groups, n_groups, counts)
    ss_g, const_g = _is_const(gc, golden, groups, n_groups, counts)
    ss_s, const_s = _is_const(sc, score, groups, n_groups, counts)
    sxy = np.bincount(groups, gc * sc, minlength=n_groups)
    ok = ~(const_g | const_s)
    rho = np.zeros(n_groups)
    rho[ok] = sxy[ok] / np.sqrt(ss_g[ok] * ss_s[ok])
    return Correlation(np.clip(rho, -1.0, 1.0), const_s, const_g)


def grouped_rank(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged, like scipy.stats.rankdata) of `x` within each group."""
    order = np.lexsort((x, groups))
    xs, gs = x[order], groups[order]
    n = x.size
    group_start = np.ones(n, dtype=bool)
    group_start[1:] = gs[1:] != gs[:-1]
    run_start = group_start.copy()
    run_start[1:] |= xs[1:] != xs[:-1]
    pos = np.arange(n)
    first_of_group = np.maximum.accumulate(np.where(group_start, pos, 0))
    run_id = np.cumsum(run_start) - 1
    run_first = pos[run_start]
    run_last = np.append(run_first[1:], n) - 1
    avg = (run_first + run_last) / 2.0  # mean position of the tie run
    ranks = np.empty(n)
    ranks[order] = avg[run_id] - first_of_group + 1.0
    return ranks


def correlation(
    golden: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    kind: CorrelationKind = "pearson",
) -> Correlation:
    """Pearson or Spearman (Pearson of within-group average ranks) per group."""
    if kind == "pearson":
        return grouped_pearson(golden, score, groups, n_groups)
    if kind == "spearman":
        return grouped_pearson(grouped_rank(golden, groups), grouped_rank(score, groups), groups, n_groups)
    raise TTPValidationError(f"`correlation` must be 'pearson' or 'spearman', got {kind!r}",
                             parameter="correlation", value=kind)


def query_correlation(
    golden: np.ndarray, score: np.ndarray, offsets: np.ndarray, kind: CorrelationKind = "pearson"
) -> Correlation:
    """ρ_q for every query of flat, query-contiguous pools."""
    sizes = np.diff(offsets)
    return correlation(golden, score, np.repeat(np.arange(sizes.size), sizes), sizes.size, kind)


def user_correlation(
    golden: np.ndarray,
    score: np.ndarray,
    offsets: np.ndarray,
    user_codes: np.ndarray,
    n_users: int,
    *,
    kind: CorrelationKind = "pearson",
    mode: UserRhoMode = "pooled",
    rho_q: Correlation | None = None,
) -> Correlation:
    """ρ_u for every user.

    - "pooled": one correlation over all of the user's candidates (includes between-query differences:
      an RM that only predicts query difficulty scores high here yet cannot select within a pool).
    - "within": pooled after centring golden and score (or their ranks) inside each query; measures
      exactly the within-pool agreement that Best-of-N can use.
    - "mean_query": mean of the user's defined-golden ρ_q (constant-score queries count as 0).
    """
    sizes = np.diff(offsets)
    q_of_c = np.repeat(np.arange(sizes.size), sizes)
    u_of_c = user_codes[q_of_c]
    if mode == "pooled":
        return correlation(golden, score, u_of_c, n_users, kind)
    if mode == "within":
        if kind == "spearman":
            golden, score = grouped_rank(golden, q_of_c), grouped_rank(score, q_of_c)
        counts = sizes.astype(np.float64)
        g = _group_center(golden, q_of_c, sizes.size, counts)
        s = _group_center(score, q_of_c, sizes.size, counts)
        return grouped_pearson(g, s, u_of_c, n_users)
    if mode == "mean_query":
        rq = rho_q if rho_q is not None else query_correlation(golden, score, offsets, kind)
        use = rq.informative.astype(np.float64)
        n_inf = np.bincount(user_codes, use, minlength=n_users)
        sums = np.bincount(user_codes, rq.rho * use, minlength=n_users)
        rho = np.divide(sums, n_inf, out=np.zeros(n_users), where=n_inf > 0)
        n_const = np.bincount(user_codes, (rq.const_score & rq.informative).astype(np.float64), minlength=n_users)
        return Correlation(rho, (n_const == n_inf) & (n_inf > 0), n_inf == 0)
    raise TTPValidationError(f"`user_rho` must be 'pooled', 'mean_query' or 'within', got {mode!r}",
                             parameter="user_rho", value=mode)


@dataclass(frozen=True)
class FailureModes:
    """The four measurable quantities of the unified law, plus the masks they come from.

    α is over users whose golden scores vary; β, ρ̄⁺, ρ̄⁻ are over the informative queries (golden varies)
    of non-collapsed users. ρ̄⁺ = mean ρ_q over ρ_q >= threshold, ρ̄⁻ = mean |ρ_q| over ρ_q < threshold; both are
    0 when their group is empty (its weight in the law is then 0 too).
    """

    alpha: float
    beta: float
    rho_pos: float
    rho_neg: float
    mean_rho_u: float
    mean_rho_q: float
    collapsed_users: np.ndarray  # (U,) bool
    hacked_queries: np.ndarray  # (Q,) bool (informative queries of non-collapsed users only)
    healthy_queries: np.ndarray  # (Q,) bool
    collapsed_queries: np.ndarray  # (Q,) bool: informative queries of collapsed users
    n_informative_users: int
    n_informative_queries: int
    n_const_score_users: int
    n_const_score_queries: int

    def summary(self) -> dict[str, float | int | None]:
        """JSON-ready scalars (NaN becomes None)."""

        def f(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        return {
            "alpha": f(self.alpha),
            "beta": f(self.beta),
            "rho_pos": f(self.rho_pos),
            "rho_neg": f(self.rho_neg),
            "mean_rho_u": f(self.mean_rho_u),
            "mean_rho_q": f(self.mean_rho_q),
            "n_collapsed_users": int(self.collapsed_users.sum()),
            "n_hacked_queries": int(self.hacked_queries.sum()),
            "n_healthy_queries": int(self.healthy_queries.sum()),
            "n_informative_users": self.n_informative_users,
            "n_informative_queries": self.n_informative_queries,
            "n_const_score_users": self.n_const_score_users,
            "n_const_score_queries": self.n_const_score_queries,
        }


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def failure_modes(
    rho_q: Correlation,
    rho_u: Correlation,
    user_codes: np.ndarray,
    *,
    collapse_threshold: float = 0.1,
    hacking_threshold: float = 0.0,
) -> FailureModes:
    """α, β, ρ̄⁺, ρ̄⁻ from per-query and per-user correlations (`user_codes[q]` = user of query q)."""
    inf_u = rho_u.informative
    collapsed = inf_u & (rho_u.rho < collapse_threshold)
    inf_q = rho_q.informative
    eligible = inf_q & ~collapsed[user_codes]
    hacked = eligible & (rho_q.rho < hacking_threshold)
    healthy = eligible & ~hacked
    n_el = int(eligible.sum())
    return FailureModes(
        alpha=float(collapsed.sum() / inf_u.sum()) if inf_u.any() else float("nan"),
        beta=float(hacked.sum() / n_el) if n_el else 0.0,
        rho_pos=float(rho_q.rho[healthy].mean()) if healthy.any() else 0.0,
        rho_neg=float(np.abs(rho_q.rho[hacked]).mean()) if hacked.any() else 0.0,
        mean_rho_u=_mean(rho_u.rho[inf_u]),
        mean_rho_q=_mean(rho_q.rho[inf_q]),
        collapsed_users=collapsed,
        hacked_queries=hacked,
        healthy_queries=healthy,
        collapsed_queries=inf_q & collapsed[user_codes],
        n_informative_users=int(inf_u.sum()),
        n_informative_queries=int(inf_q.sum()),
        n_const_score_users=int((rho_u.const_score & inf_u).sum()),
        n_const_score_queries=int((rho_q.const_score & inf_q).sum()),
    )
