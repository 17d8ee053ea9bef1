"""Selectors beyond one fixed score per candidate from a trained RM, evaluated after `report_from_pools`.

Training-free ones: the policy's log-prob (summed, per token) and `profile-mbr` (exact BoN: one fixed score
per candidate) and MBR (its score of a candidate depends on the other candidates: Monte Carlo over
N-subsets). Pool-aware RMs read the consensus of the other candidates too, so they are re-scored on the same
Monte-Carlo subsets as MBR. Prob RMs' σ calibration is added here as well (it needs the scores' σ column,
which `pools_from_tables` hands over beside the pools).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ttp_ray.errors import DataError
from ttp_ray.evaluation import bon
from ttp_ray.evaluation.calibration import calibration
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.jsonable import json_ready
from ttp_ray.evaluation.paired import exact_at, paired_share_difference
from ttp_ray.evaluation.subset_bon import subset_bon
from ttp_ray.scoring.selectors import logprob_scores, mbr_from_matrix, pairwise_rouge, profile_mbr_scores

__all__ = ["finish_training_free", "paired_section", "training_free_scores", "with_training_free"]


def with_training_free(pools: bon.Pools, info: dict[str, Any],
                       profiles: Mapping[str, Sequence[str]] | None = None,
                       metric: str = "rouge1") -> tuple[bon.Pools, dict[str, Any]]:
    """Add the per-candidate training-free selectors to `pools.scores`; return the candidate columns too
    (and, under "pool_weights", the pool-aware RMs' slopes). `profiles` (user → past outputs) adds
    `profile-mbr`."""
    cols = info.pop("_candidate_columns", {})
    if "_pool_weights" in info:
        cols["pool_weights"] = info.pop("_pool_weights")
    if "_sigmas" in info:
        cols["sigmas"] = info.pop("_sigmas")
    free = training_free_scores(cols)
    if profiles is not None and "text" in cols:
        texts, off = cols["text"], pools.offsets
        per_query = [profile_mbr_scores(list(texts[off[q]:off[q + 1]]),
                                        profiles.get(str(pools.users[pools.user_codes[q]]), []), metric)
                     for q in range(pools.n_queries)]
        free["profile-mbr"] = np.concatenate(per_query) if per_query else np.zeros(0)
    if free:
        pools = dataclasses.replace(pools, scores={**pools.scores, **free})
    return pools, cols


def finish_training_free(report: dict, pools: bon.Pools, cols: dict[str, np.ndarray],
                         cfg: EvaluationConfig) -> dict:
    """Mark the log-prob selectors as training-free (exact BoN), add MBR and re-evaluate pool-aware RMs (both
    Monte Carlo over N-subsets: their scores depend on the subset)."""
    for m in ("logprob", "logprob-mean", "profile-mbr"):
        if m in report["methods"]:
            report["methods"][m].update(kind="training-free", evaluated="exact")
    for m, sigma in cols.get("sigmas", {}).items():
        if m in report["methods"]:
            report["methods"][m]["calibration"] = calibration(pools.scores[m], sigma, pools.golden[cfg.golden],
                                                         pools.offsets)
    pool_w = cols.get("pool_weights", {})
    if "text" not in cols or cfg.mbr_subsets <= 0:
        if pool_w:
            raise DataError("pool-aware RMs need the candidates' texts and evaluation.mbr_subsets > 0 "
                            f"(methods {sorted(pool_w)})", file="<candidates>", field="text")
        return _with_paired(report, pools, {}, cfg)
    texts = list(cols["text"])
    sims = [pairwise_rouge(texts[pools.offsets[q]:pools.offsets[q + 1]], cfg.mbr_metric)
            for q in range(pools.n_queries)]
    at_max: dict[str, np.ndarray] = {}  # per-query value at N = max of the subset-evaluated methods
    report["methods"]["mbr"], at_max["mbr"] = _mbr_entry(report, pools, sims, cfg)
    for m, w in pool_w.items():
        entry, at_max[m] = _pool_rm_entry(report, pools, sims, pools.scores[m], w, cfg)
        report["methods"][m].update(entry)
        report["methods"][m].pop("montecarlo", None)  # the exact-vs-draws cross-check is for per-candidate scores
        # the smooth exact curve was computed from whole-pool μ: plot the subset estimates at `ns` instead
        report.get("_plot_data", {}).get("curves", {}).pop(m, None)
    return _with_paired(report, pools, at_max, cfg)


def _with_paired(report: dict, pools: bon.Pools, at_max: Mapping[str, np.ndarray], cfg: EvaluationConfig) -> dict:
    paired = paired_section(report, pools, at_max, cfg)
    if paired:
        report["paired"] = paired
    return report


def paired_section(report: dict, pools: bon.Pools, at_max: Mapping[str, np.ndarray],
                   cfg: EvaluationConfig) -> dict[str, Any]:
    """Each RM against the best training-free selector at N = max, paired on the same pools, with a
    cluster-bootstrap interval over users (`ttp_ray.evaluation.paired`); {} when either side is missing.

    "Best" is the training-free selector with the largest share here, which favours the baseline (its
    luck on these queries counts for it), so an interval above 0 is a conservative win."""
    methods = report["methods"]
    free = {m: e["oracle_gain_captured"] for m, e in methods.items()
            if e.get("kind") == "training-free" and e.get("oracle_gain_captured") is not None}
    rms = [m for m, e in methods.items() if e.get("kind") == "rm"]
    if cfg.paired_resamples <= 0 or not free or not rms:
        return {}
    g, n = pools.golden[cfg.golden], int(report["ns"][-1])
    best = max(free, key=free.get)

    def values(m: str) -> np.ndarray:
        return at_max[m] if m in at_max else exact_at(g, pools.scores[m], pools.offsets, n)

    oracle, mean = exact_at(g, None, pools.offsets, n), exact_at(g, None, pools.offsets, 1)
    out: dict[str, Any] = {"n": n, "baseline": best, "golden": cfg.golden, "methods": {}}
    for m in rms:
        out["methods"][m] = paired_share_difference(
            values(m), values(best), oracle, mean, pools.user_codes, aggregate=cfg.aggregate,
            resamples=cfg.paired_resamples, seed=cfg.seed)
    return json_ready(out)


def training_free_scores(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-candidate training-free selectors (exact BoN applies): the policy's log-prob, summed and per token.

    Left out when any candidate lacks a log-prob (the simulated policy has none).
    """
    if "logprob" not in cols or "num_tokens" not in cols:
        return {}
    lp = np.asarray(cols["logprob"], dtype=np.float64)
    if lp.size == 0 or not np.isfinite(lp).all():
        return {}
    nt = np.asarray(cols["num_tokens"], dtype=np.float64)
    return {"logprob": logprob_scores(lp, nt, per_token=False),
            "logprob-mean": logprob_scores(lp, nt, per_token=True)}


def _mbr_entry(report: dict, pools: bon.Pools, sims: list[np.ndarray],
               cfg: EvaluationConfig) -> tuple[dict[str, Any], np.ndarray]:
    """MBR by Monte Carlo over N-subsets (its scores depend on the subset), with standard errors; and its
    per-query value at N = max."""
    mc = subset_bon(pools.golden, pools.offsets, report["ns"], lambda q, subs: mbr_from_matrix(sims[q], subs),
                    n_subsets=cfg.mbr_subsets, seed=cfg.seed)
    return _subset_entry(report, pools, mc, cfg, kind="training-free"), mc[cfg.golden].mean[:, -1]


_TIE_DECIMALS = 6  # μ comes from float32 heads: differences below ~1e-7 are rounding, not preference


def _pool_rm_entry(report: dict, pools: bon.Pools, sims: list[np.ndarray], mu: np.ndarray, w: np.ndarray,
                   cfg: EvaluationConfig) -> tuple[dict[str, Any], np.ndarray]:
    """A pool-aware RM's Best-of-N by Monte Carlo over N-subsets: μ_S(c) = μ(c) + w(c)·(cons_S(c) − cons(c)),
    exact for each subset because μ is affine in the consensus column (`ttp_ray.reward.pool`). Replaces the
    exact-BoN curves the report computed from the whole-pool μ; diagnostics and the law keep whole-pool μ."""
    offs = pools.offsets
    base = [mu[offs[q]:offs[q + 1]] - w[offs[q]:offs[q + 1]] * mbr_from_matrix(sims[q]) for q in range(len(sims))]

    def scorer(q: int, subs: np.ndarray) -> np.ndarray:
        # rounded to float32's resolution of μ: members tied on every feature (e.g. the two of an N=2 subset,
        # whose consensus is equal) must tie exactly and be broken at random, not by float error in `base`,
        # which carries whole-pool information
        return np.round(base[q][subs] + w[offs[q]:offs[q + 1]][subs] * mbr_from_matrix(sims[q], subs), _TIE_DECIMALS)

    mc = subset_bon(pools.golden, offs, report["ns"], scorer, n_subsets=cfg.mbr_subsets, seed=cfg.seed)
    entry = _subset_entry(report, pools, mc, cfg, kind="rm")
    entry["pool_aware"] = True
    return entry, mc[cfg.golden].mean[:, -1]


def _subset_entry(report: dict, pools: bon.Pools, mc: dict, cfg: EvaluationConfig, *, kind: str) -> dict[str, Any]:
    g0 = cfg.golden
    weights = bon.query_weights(pools.user_codes, cfg.aggregate)
    entry: dict[str, Any] = {"kind": kind, "evaluated": f"montecarlo ({cfg.mbr_subsets} subsets)",
                             "n_subsets": cfg.mbr_subsets, "bon": {}, "se": {}}
    uw, qw = bon.query_weights(pools.user_codes, "user"), bon.query_weights(pools.user_codes, "query")
    entry["bon_query_mean"], entry["bon_user_mean"] = {}, {}
    for g, est in mc.items():
        entry["bon"][g], entry["se"][g] = est.aggregate(weights)
        entry["bon_query_mean"][g] = est.aggregate(qw)[0]
        entry["bon_user_mean"][g] = est.aggregate(uw)[0]
    u1 = report["methods"]["random"]["bon"][g0][0]
    scale = report["methods"]["oracle"]["bon"][g0][-1] - u1
    entry["oracle_gain_captured"] = float((entry["bon"][g0][-1] - u1) / scale) if scale > 0 else None
    return json_ready(entry)

