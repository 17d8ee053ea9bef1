"""Training-free selectors: what a user tries before training a reward model.

* `mbr` — minimum-Bayes-risk / consensus: a candidate's mean golden-metric similarity (ROUGE-1 F1 by
  default) to the *other* candidates it is selected among. Its score depends on the pool, so Best-of-N over
  N-subsets must recompute it on each subset (`ttp_ray.evaluation.subset_bon`); exact order-statistic BoN
  does not apply.
* `logprob` — the policy's summed token log-probability of the candidate (favours short candidates).
* `logprob-mean` — the same per generated token.
* `profile-mbr` — MBR against the user's own history: a candidate's mean golden-metric similarity to each of
  the user's past outputs (the profile). Per candidate (exact BoN applies); it is the `rouge_user` feature of
  the commit RMs used alone, so the report shows what their training adds to it.

Pure numpy; the serving runtime calls the same functions on the N candidates of a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ttp_ray.scoring.rouge import rouge_f1

__all__ = ["POOL_DEPENDENT", "TRAINING_FREE", "logprob_scores", "mbr_from_matrix", "mbr_scores", "pairwise_rouge",
           "profile_mbr_scores"]

Metric = Literal["rouge1", "rougeL"]

TRAINING_FREE: tuple[str, ...] = ("mbr", "logprob", "logprob-mean", "profile-mbr")
# Selectors whose score of a candidate depends on the other candidates of its (sub)pool.
POOL_DEPENDENT: frozenset[str] = frozenset({"mbr"})


def pairwise_rouge(texts: Sequence[str], metric: Metric = "rouge1") -> np.ndarray:
    """(M, M) matrix of ROUGE F1 between every pair of `texts` (symmetric: F1 is symmetric in p and r).

    The diagonal is set to 0; it is never used (a candidate is not its own evidence).
    """
    m = len(texts)
    if m == 0:
        return np.zeros((0, 0))
    iu, ju = np.triu_indices(m, k=1)
    r1, rl = rouge_f1([texts[i] for i in iu], [texts[j] for j in ju])
    vals = r1 if metric == "rouge1" else rl
    out = np.zeros((m, m))
    out[iu, ju] = vals
    out[ju, iu] = vals
    return out


def mbr_from_matrix(sim: np.ndarray, subsets: np.ndarray | None = None) -> np.ndarray:
    """MBR scores from a pairwise similarity matrix (zero diagonal): each member's mean similarity to the others.

    `subsets` restricts the pool: a 1-D array of indices gives one score per member (in that order); an (R, n)
    array gives (R, n) scores, one row per subset (the batched form Monte-Carlo evaluation uses). A pool of one
    candidate scores 0.
    """
    if subsets is None:
        subsets = np.arange(sim.shape[0])
    n = subsets.shape[-1]
    if n <= 1:
        return np.zeros(subsets.shape)
    block = sim[subsets[..., :, None], subsets[..., None, :]]  # (..., n, n)
    return block.sum(axis=-1) / (n - 1)


def mbr_scores(texts: Sequence[str], metric: Metric = "rouge1") -> np.ndarray:
    """Consensus score of each candidate against the others of the same pool.

    Example:
        >>> mbr_scores(["fix the bug", "fix bug", "add docs"]).round(3).tolist()
        [0.4, 0.4, 0.0]
    """
    return mbr_from_matrix(pairwise_rouge(texts, metric))


def logprob_scores(logprob: np.ndarray, num_tokens: np.ndarray, *, per_token: bool) -> np.ndarray:
    """The policy's log-prob of each candidate, summed or per token; a missing log-prob (NaN) ranks last."""
    lp = np.asarray(logprob, dtype=np.float64)
    if per_token:
        lp = lp / np.maximum(np.asarray(num_tokens, dtype=np.float64), 1.0)
    return np.where(np.isfinite(lp), lp, -np.inf)


def profile_mbr_scores(texts: Sequence[str], outputs: Sequence[str], metric: Metric = "rouge1") -> np.ndarray:
    """Each candidate's mean ROUGE F1 against each of the user's past `outputs` (0 for a user with none).

    Example:
        >>> profile_mbr_scores(["fix the bug", "add docs"], ["fix a bug", "fix typo"]).round(3).tolist()
        [0.533, 0.0]
    """
    m, p = len(texts), len(outputs)
    if m == 0 or p == 0:
        return np.zeros(m)
    r1, rl = rouge_f1([t for t in texts for _ in range(p)], list(outputs) * m)
    return (r1 if metric == "rouge1" else rl).reshape(m, p).mean(axis=1)
