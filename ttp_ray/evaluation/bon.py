"""Exact expected Best-of-N over candidate pools, plus the paper's Monte-Carlo protocol.

A pool is one query's M candidates with golden scores g and selector scores s. Best-of-N draws an N-subset
uniformly and keeps the candidate with the highest s. Sorting the pool by s ascending, the candidate at rank
i (1-based) is the subset's maximum with probability C(i-1, N-1) / C(M, N); a block of tied scores shares its
total mass evenly (the winner among tied maxima is uniform). So E[BoN_N] = Σ_i w_i(N) · ḡ_i, with ḡ the golden
score averaged inside each tie block. Derivation: docs/theory.md §1.

Pools are stored flat and query-contiguous (`golden[offsets[q]:offsets[q+1]]` is query q) so ragged pool
sizes are supported; the maths runs on one (Q_M, M) matrix per distinct pool size M.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import special

from ttp_ray.errors import TTPValidationError

Aggregate = Literal["query", "user"]


# --------------------------------------------------------------------------------------------- pools
@dataclass(frozen=True)
class Pools:
    """Candidate pools of many queries, flat and query-contiguous.

    Queries are ordered by (user_id, query_id); `user_codes[q]` indexes `users`. `golden` maps a golden
    name ("rouge1", "rougeL") and `scores` a method name to a flat (C,) float64 array aligned with the pools.
    """

    users: np.ndarray  # (U,) str, sorted
    user_codes: np.ndarray  # (Q,) int64 -> users
    query_ids: np.ndarray  # (Q,) str
    offsets: np.ndarray  # (Q+1,) int64
    golden: dict[str, np.ndarray]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    fallback_share: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = int(self.offsets[-1])
        for kind, arrays in (("golden", self.golden), ("scores", self.scores)):
            for name, arr in arrays.items():
                if arr.shape != (n,):
                    raise ValueError(f"{kind}[{name!r}] has shape {arr.shape}, expected ({n},)")
        if self.user_codes.shape != (self.n_queries,):
            raise ValueError(f"user_codes has shape {self.user_codes.shape}, expected ({self.n_queries},)")

    @property
    def n_queries(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def n_users(self) -> int:
        return int(self.users.size)

    @property
    def n_candidates(self) -> int:
        return int(self.offsets[-1])

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def query_of_candidate(self) -> np.ndarray:
        """(C,) query index of every candidate."""
        return np.repeat(np.arange(self.n_queries), self.sizes)

    @property
    def methods(self) -> list[str]:
        return list(self.scores)


def size_groups(offsets: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (M, query indices, (Q_M, M) flat gather index) for every distinct pool size M."""
    sizes = np.diff(offsets)
    for m in np.unique(sizes):
        qs = np.flatnonzero(sizes == m)
        yield int(m), qs, offsets[qs][:, None] + np.arange(m)[None, :]


# ------------------------------------------------------------------------------------- exact BoN
def _check_ns(ns: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ns, dtype=np.int64).ravel()
    if arr.size == 0 or (arr < 1).any():
        raise TTPValidationError(f"`ns` must be non-empty with values >= 1, got {arr.tolist()}", parameter="ns",
                                 value=arr.tolist())
    return arr


@lru_cache(maxsize=256)
def _bon_weights_cached(m: int, ns: tuple[int, ...]) -> np.ndarray:
    i = np.arange(1, m + 1, dtype=np.float64)[None, :]  # rank (1-based), (1, M)
    n = np.minimum(np.asarray(ns, dtype=np.float64), m)[:, None]  # N clipped to the pool, (K, 1)
    ok = i >= n
    with np.errstate(invalid="ignore"):
        # log C(i-1, N-1) - log C(M, N), all via gammaln so M up to thousands stays exact to ~1e-13.
        log_w = (special.gammaln(i) - special.gammaln(n) - special.gammaln(i - n + 1)
                 - special.gammaln(m + 1) + special.gammaln(n + 1) + special.gammaln(m - n + 1))
    w = np.where(ok, np.exp(np.where(ok, log_w, 0.0)), 0.0)
    w /= w.sum(axis=1, keepdims=True)  # exact up to rounding (Σ_i C(i-1,N-1) = C(M,N)); removes drift
    w.setflags(write=False)
    return w


def bon_weights(m: int, ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """(K, M) probabilities that the rank-i candidate (ascending by score) wins a uniform N-subset.

    Row k is C(i-1, N_k-1) / C(M, N_k) for i = 1..M, with N_k clipped to M (N > M means "the whole pool").
    """
    if m < 1:
        raise TTPValidationError(f"pool size must be >= 1, got {m}", parameter="m", value=m)
    return _bon_weights_cached(int(m), tuple(int(n) for n in _check_ns(ns)))


def tie_average(sorted_scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replace `values` by their mean inside each run of equal `sorted_scores` (rows sorted ascending)."""
    q, m = sorted_scores.shape
    new_block = np.ones((q, m), dtype=bool)
    new_block[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    if new_block.all():  # no ties anywhere: nothing to average
        return values
    block = np.cumsum(new_block.ravel()) - 1  # global block id (every row starts a new block)
    sums = np.bincount(block, values.ravel())
    counts = np.bincount(block)
    return (sums / counts)[block].reshape(q, m)


def exact_bon_matrix(golden: np.ndarray, scores: np.ndarray | None, ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """Exact expected Best-of-N for Q pools of equal size M: (Q, M) arrays in, (Q, K) out.

    `scores=None` is the oracle (select on golden itself). Ties in `scores` are averaged exactly.
    """
    golden = np.asarray(golden, dtype=np.float64)
    if golden.ndim != 2:
        raise ValueError(f"`golden` must be (Q, M), got shape {golden.shape}")
    w = bon_weights(golden.shape[1], ns)
    if scores is None:
        g_sorted = np.sort(golden, axis=1)  # ties in g carry equal g: no averaging needed
    else:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != golden.shape:
            raise ValueError(f"`scores` shape {scores.shape} != `golden` shape {golden.shape}")
        order = np.argsort(scores, axis=1, kind="stable")
        s_sorted = np.take_along_axis(scores, order, axis=1)
        g_sorted = tie_average(s_sorted, np.take_along_axis(golden, order, axis=1))
    return g_sorted @ w.T


def exact_bon(
    golden: np.ndarray, scores: np.ndarray | None, offsets: np.ndarray, ns: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Exact expected Best-of-N per query for flat ragged pools: (Q, K). `scores=None` is the oracle."""
    ns = _check_ns(ns)
    out = np.empty((offsets.size - 1, ns.size), dtype=np.float64)
    for _, qs, idx in size_groups(offsets):
        out[qs] = exact_bon_matrix(golden[idx], None if scores is None else scores[idx], ns)
    return out


def random_bon(golden: np.ndarray, offsets: np.ndarray, ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """Random selection: every N gives the pool mean (a flat curve), (Q, K)."""
    ns = _check_ns(ns)
    sizes = np.diff(offsets)
    q = np.repeat(np.arange(sizes.size), sizes)
    mean = np.bincount(q, golden, minlength=sizes.size) / sizes
    return np.repeat(mean[:, None], ns.size, axis=1)


# ----------------------------------------------------------------------------------- aggregation
def aggregate(per_query: np.ndarray, user_codes: np.ndarray, how: Aggregate = "query") -> np.ndarray:
    """Aggregate per-query values (Q, ...) into a population value.

    "query": mean over queries (LaMP's convention and the report's headline). "user": mean over users of
    each user's mean over their queries, i.e. E_u E_x as in the paper's notation.
    """
    per_query = np.asarray(per_query, dtype=np.float64)
    if how == "query":
        return per_query.mean(axis=0)
    if how == "user":
        uniq, inv = np.unique(user_codes, return_inverse=True)
        counts = np.bincount(inv).astype(np.float64)
        flat = per_query.reshape(per_query.shape[0], -1)
        sums = np.stack([np.bincount(inv, flat[:, k], minlength=uniq.size) for k in range(flat.shape[1])], 1)
        return (sums / counts[:, None]).mean(axis=0).reshape(per_query.shape[1:])
    raise TTPValidationError(f"`aggregate` must be 'query' or 'user', got {how!r}", parameter="aggregate",
                             value=how)


def query_weights(user_codes: np.ndarray, how: Aggregate = "query") -> np.ndarray:
    """(Q,) weights summing to 1 such that `weights @ per_query == aggregate(per_query, ..., how)`."""
    q = user_codes.size
    if how == "query":
        return np.full(q, 1.0 / q)
    _, inv, counts = np.unique(user_codes, return_inverse=True, return_counts=True)
    return 1.0 / (counts[inv] * counts.size)


# ----------------------------------------------------------------------------------- Monte Carlo
def montecarlo_bon(
    golden: np.ndarray,
    scores: Mapping[str, np.ndarray | None],
    offsets: np.ndarray,
    ns: Sequence[int] | np.ndarray,
    *,
    repeats: int = 3,
    rng: np.random.Generator | int | None = 0,
) -> dict[str, np.ndarray]:
    """The paper's protocol: per (query, N) draw N of M without replacement, select argmax, average `repeats`.

    All methods see the same subsets (common random numbers); a `None` score means the oracle. Ties go to
    a uniformly random tied candidate, because subsets come in a uniformly random order and `argmax` takes the
    first maximum. Returns method -> (Q, K).
    """
    ns = _check_ns(ns)
    if repeats < 1:
        raise TTPValidationError(f"`repeats` must be >= 1, got {repeats}", parameter="repeats", value=repeats)
    rng = np.random.default_rng(rng)
    out = {name: np.zeros((offsets.size - 1, ns.size)) for name in scores}
    for m, qs, idx in size_groups(offsets):
        g = golden[idx]
        s_all = {name: g if s is None else s[idx] for name, s in scores.items()}
        rows = np.arange(qs.size)[:, None]
        for k, n in enumerate(np.minimum(ns, m)):
            for _ in range(repeats):
                pick = np.argsort(rng.random((qs.size, m)), axis=1)[:, :n]  # uniform N-subset, random order
                g_sub = g[rows, pick]
                for name, s in s_all.items():
                    win = np.argmax(s[rows, pick], axis=1)
                    out[name][qs, k] += g_sub[rows[:, 0], win]
    for name in out:
        out[name] /= repeats
    return out


def montecarlo_agreement(
    golden: np.ndarray,
    scores: Mapping[str, np.ndarray | None],
    offsets: np.ndarray,
    user_codes: np.ndarray,
    ns: Sequence[int] | np.ndarray,
    *,
    repeats: int = 3,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    how: Aggregate = "query",
) -> dict[str, dict[str, list[float] | float]]:
    """How far the paper's Monte-Carlo protocol lands from the exact curve, per method.

    Runs the protocol once per seed and returns, per method: the exact aggregated curve, the mean and the
    standard deviation (across seeds) of the Monte-Carlo aggregated curve, and the max |MC − exact| of a
    single run (the error a reader of a 3-repeat paper table inherits).
    """
    ns = _check_ns(ns)
    runs = [montecarlo_bon(golden, scores, offsets, ns, repeats=repeats, rng=s) for s in seeds]
    out: dict[str, dict[str, list[float] | float]] = {}
    for name, s in scores.items():
        exact = aggregate(exact_bon(golden, s, offsets, ns), user_codes, how)
        mc = np.stack([aggregate(r[name], user_codes, how) for r in runs])
        out[name] = {
            "exact": exact.tolist(),
            "mc_mean": mc.mean(axis=0).tolist(),
            "mc_std": (mc.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(ns.size)).tolist(),
            "max_abs_error_single_run": float(np.abs(mc - exact).max()),
        }
    return out
