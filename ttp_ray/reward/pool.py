"""Pool-aware features: what a candidate's score may read from the other candidates it is selected among.

At serving time all N candidates of a request are in hand, so a reward model may use them: a candidate the
policy produced in many variants (high consensus) is, on the commit data, more often close to what the user
wrote than an outlier (MBR, `ttp_ray.scoring.selectors`). Such a feature changes with the pool, so:

* it enters the head's μ **linearly** (`RewardHead` routes the trailing `linear_inputs` columns around the
  trunk), and the per-user bank is affine in its inputs, so for every variant

      μ_S(c) = a(c) + w(c) · consensus_S(c)       a(c) = μ with the pool column at 0, w(c) = the slope

  and Best-of-N over any N-subset S is evaluated exactly from (a, w) and the pool's pairwise matrix
  (`ttp_ray.evaluation.subset_bon`), without re-running the model;
* training pools and serving requests compute it on the whole pool they hold.

Blocks (all pure numpy on texts; no backbone):

    consensus    mean ROUGE-1 F1 of the candidate against the other candidates of its pool (= MBR's score)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ttp_ray.scoring.selectors import mbr_from_matrix, pairwise_rouge

__all__ = ["POOL_BLOCKS", "pool_features", "pool_features_by_offsets", "pool_offsets", "query_groups"]

POOL_BLOCKS: tuple[str, ...] = ("consensus",)


def pool_features(texts: Sequence[str], blocks: Sequence[str]) -> np.ndarray:
    """(len(texts), len(blocks)) pool features of one pool's candidates, columns in `blocks` order.

    Example:
        >>> pool_features(["fix the bug", "fix bug", "add docs"], ["consensus"]).round(3).ravel().tolist()
        [0.4, 0.4, 0.0]
    """
    unknown = sorted(set(blocks) - set(POOL_BLOCKS))
    if unknown:
        raise ValueError(f"unknown pool blocks {unknown}; known: {list(POOL_BLOCKS)}")
    cols = []
    for b in blocks:
        if b == "consensus":
            cols.append(mbr_from_matrix(pairwise_rouge(list(texts), "rouge1")))
    return np.stack(cols, axis=1) if cols else np.zeros((len(texts), 0))


def pool_offsets(user_ids: Sequence[str], query_ids: Sequence[str]) -> np.ndarray:
    """Start offsets (+ the end) of each run of rows with the same (user, query): the pools, in row order."""
    n = len(user_ids)
    starts = [i for i in range(n) if i == 0 or user_ids[i] != user_ids[i - 1] or query_ids[i] != query_ids[i - 1]]
    return np.asarray([*starts, n], dtype=np.int64)


def query_groups(user_ids: Sequence[Any] | np.ndarray, query_ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """(N,) int64 code of each row's (user, query) pool, 0..G−1 in order of first appearance (any row order):
    the groups of `ttp_ray.reward.losses.within_query_loss`."""
    keys = pd.Series(np.asarray(user_ids).astype(str), dtype=object) + "\x1f" + np.asarray(query_ids).astype(str)
    return pd.factorize(keys, sort=False)[0].astype(np.int64)


def pool_features_by_offsets(texts: Sequence[str], offsets: np.ndarray, blocks: Sequence[str]) -> np.ndarray:
    """Pool features of many pools laid out contiguously (`offsets` as from `pool_offsets`)."""
    out = np.zeros((len(texts), len(blocks)))
    for lo, hi in zip(offsets[:-1], offsets[1:], strict=True):
        out[lo:hi] = pool_features(texts[lo:hi], blocks)
    return out
