"""Best-of-N for selectors whose score of a candidate depends on the subset it is selected from (MBR).

Exact order-statistic BoN (`bon.py`) needs one fixed score per candidate. MBR's consensus score changes with
the N-subset (a candidate's agreement with the *other* sampled candidates), so it is estimated by Monte Carlo:
for every pool and N, `n_subsets` uniform N-subsets (fixed seed), the selector re-scored on each subset, the
selected candidate's golden score averaged. The standard error over subsets is reported beside the mean.
Subsets come in a uniformly random order and `argmax` takes the first maximum, so ties break uniformly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ttp_ray.scoring.selectors import mbr_from_matrix, pairwise_rouge

__all__ = ["SubsetBoN", "mbr_subset_bon", "subset_bon"]

# (pool index, (R, n) subset indices into the pool) -> (R, n) scores of every subset's members
SubsetScorer = Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SubsetBoN:
    """Per-query Monte-Carlo BoN: `mean[q, k]` and the variance over subsets `var[q, k]` for N = ns[k]."""

    ns: np.ndarray
    mean: np.ndarray  # (Q, K)
    var: np.ndarray  # (Q, K)
    n_subsets: int

    def aggregate(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean over queries and its standard error (subsets are independent across queries)."""
        mean = weights @ self.mean
        se = np.sqrt((weights**2) @ self.var / self.n_subsets)
        return mean, se


def subset_bon(goldens: Mapping[str, np.ndarray], offsets: np.ndarray, ns: Sequence[int], scorer: SubsetScorer,
               *, n_subsets: int = 200, seed: int = 0) -> dict[str, SubsetBoN]:
    """Monte-Carlo BoN of a subset-dependent selector under every golden score (one draw of subsets and
    winners serves them all); N above a pool's size uses the whole pool."""
    if n_subsets < 1:
        raise ValueError(f"`n_subsets` must be >= 1, got {n_subsets}")
    ns_arr = np.asarray(ns, dtype=np.int64)
    shape = (offsets.size - 1, ns_arr.size)
    mean = {g: np.zeros(shape) for g in goldens}
    var = {g: np.zeros(shape) for g in goldens}
    rng = np.random.default_rng(seed)
    rows = np.arange(n_subsets)
    for q in range(shape[0]):
        lo, m = int(offsets[q]), int(offsets[q + 1] - offsets[q])
        for k, n in enumerate(np.minimum(ns_arr, m)):
            subs = np.argsort(rng.random((n_subsets, m)), axis=1)[:, :n]  # uniform subsets in random order
            chosen = lo + subs[rows, np.argmax(scorer(q, subs), axis=1)]
            for g, gold in goldens.items():
                picks = gold[chosen]
                mean[g][q, k] = picks.mean()
                var[g][q, k] = picks.var(ddof=1) if n_subsets > 1 else 0.0
    return {g: SubsetBoN(ns_arr, mean[g], var[g], n_subsets) for g in goldens}


def mbr_subset_bon(texts: Sequence[str], goldens: Mapping[str, np.ndarray], offsets: np.ndarray,
                   ns: Sequence[int], *, metric: str = "rouge1", n_subsets: int = 200,
                   seed: int = 0) -> dict[str, SubsetBoN]:
    """MBR (consensus under `metric`) re-scored on each sampled subset; one pairwise matrix per pool."""
    sims = [pairwise_rouge(list(texts[offsets[q]:offsets[q + 1]]), metric) for q in range(offsets.size - 1)]
    return subset_bon(goldens, offsets, ns, lambda q, subs: mbr_from_matrix(sims[q], subs),
                      n_subsets=n_subsets, seed=seed)
