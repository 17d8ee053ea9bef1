"""The evaluation report: CANDIDATES + SCORES tables in, report.json / report.md / PNGs out.

Pipeline: `pools_from_tables` (validate and align the Arrow tables) → `compute_stats` (per-query exact curves
on N = 1..M_max, ρ_q, ρ_u; the part job.py can run as Ray Data tasks) → `report_from_pools` (aggregation,
failure modes, the law, theory fit, Monte-Carlo protocol, allocation) → `write_report`.
The JSON layout is documented in docs/theory.md §7.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ttp_ray.errors import DataError
from ttp_ray.evaluation import allocation as alloc_mod
from ttp_ray.evaluation import bon, law, theory
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.diagnostics import (
    Correlation,
    failure_modes,
    query_correlation,
    user_correlation,
)
from ttp_ray.evaluation.subset_bon import subset_bon
from ttp_ray.scoring.selectors import logprob_scores, mbr_from_matrix, pairwise_rouge, profile_mbr_scores

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = "1"
GOLDENS = ("rouge1", "rougeL")
RESERVED_METHODS = ("oracle", "random")
SHORT = {"rouge1": "R1", "rougeL": "RL"}


# ------------------------------------------------------------------------------------ table -> pools
def _dict_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a string column whose order follows the sorted unique values (fast, Arrow C++)."""
    enc = pc.dictionary_encode(col).combine_chunks()
    values = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    order = np.argsort(values, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank[enc.indices.to_numpy(zero_copy_only=False)], values[order]


def _lookup(col: pa.ChunkedArray, values: np.ndarray) -> np.ndarray:
    """Codes of `col` in the sorted `values`, -1 where absent."""
    idx = pc.index_in(col, value_set=pa.array(values.tolist(), type=pa.string()))
    return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _float_col(table: pa.Table, name: str) -> np.ndarray:
    return pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _require(table: pa.Table, cols: Sequence[str], file: str) -> None:
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise DataError(f"missing columns {missing}; has {table.column_names}", file=file, field=missing[0])


def pools_from_tables(
    candidates: pa.Table,
    scores: pa.Table | None,
    *,
    goldens: Sequence[str] = GOLDENS,
    required_golden: str = "rouge1",
    candidates_file: str = "<candidates table>",
    scores_file: str = "<scores table>",
) -> tuple[bon.Pools, dict[str, Any]]:
    """Align CANDIDATES (eval rows) and SCORES into `Pools`; return (pools, data-quality counts).

    Rules: rows with `mode` != "eval" are ignored; a query with a null/NaN golden score is skipped and counted
    (no reference, nothing to evaluate); duplicate keys, a candidate without a score for some method, a score
    for an unknown candidate of a known query, and non-finite `mu` are errors naming the record. Score rows for
    queries absent from the candidates are ignored and counted.
    """
    _require(candidates, ["user_id", "query_id", "cand_idx", required_golden], candidates_file)
    info: dict[str, Any] = {"skipped_queries_null_golden": 0, "ignored_score_rows": 0}
    if "mode" in candidates.column_names:
        n_all = candidates.num_rows
        candidates = candidates.filter(pc.equal(candidates["mode"], "eval"))
        info["ignored_non_eval_rows"] = n_all - candidates.num_rows
    if candidates.num_rows == 0:
        raise DataError("no evaluation candidates (need rows with mode == 'eval')", file=candidates_file)
    goldens = [g for g in goldens if g in candidates.column_names]

    ucode, users = _dict_codes(candidates["user_id"])
    qcode_raw, qids = _dict_codes(candidates["query_id"])
    key = ucode * qids.size + qcode_raw
    keys, qcode = np.unique(key, return_inverse=True)  # sorted by (user_id, query_id)
    cand_idx = candidates["cand_idx"].to_numpy(zero_copy_only=False).astype(np.int64)
    gold = {g: _float_col(candidates, g) for g in goldens}

    # queries with any missing golden score are skipped (the pool cannot be evaluated)
    bad = ~np.isfinite(gold[required_golden])
    keep_q = np.ones(keys.size, dtype=bool)
    keep_q[np.unique(qcode[bad])] = False
    info["skipped_queries_null_golden"] = int((~keep_q).sum())
    if not keep_q.any():
        raise DataError(f"every query has a null `{required_golden}`: no reference outputs to evaluate against",
                        file=candidates_file, field=required_golden)
    for g in list(goldens):
        if g != required_golden and not np.isfinite(gold[g][keep_q[qcode]]).all():
            log.warning("golden %r has nulls in kept queries; it is left out of the report", g)
            goldens.remove(g)

    rows = np.flatnonzero(keep_q[qcode])
    c_min = int(cand_idx[rows].min())
    width = int(cand_idx[rows].max()) - c_min + 1
    order = rows[np.argsort(qcode[rows] * width + (cand_idx[rows] - c_min), kind="stable")]
    q_sorted, c_sorted = qcode[order], cand_idx[order]
    dup = np.flatnonzero((q_sorted[1:] == q_sorted[:-1]) & (c_sorted[1:] == c_sorted[:-1]))
    if dup.size:
        r = order[dup[0] + 1]
        raise DataError("duplicate candidate key", file=candidates_file,
                        record_id=f"{users[ucode[r]]}/{qids[qcode_raw[r]]}/{cand_idx[r]}", field="cand_idx")
    # renumber kept queries 0..Q-1
    new_q = np.cumsum(keep_q) - 1
    qk = new_q[q_sorted]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(qk, minlength=int(keep_q.sum())))]).astype(np.int64)
    kept_keys = keys[keep_q]
    user_codes_all = kept_keys // qids.size
    used_users, user_codes = np.unique(user_codes_all, return_inverse=True)
    query_ids = qids[kept_keys % qids.size]

    score_arrays: dict[str, np.ndarray] = {}
    fallback: dict[str, float] = {}
    if scores is not None and scores.num_rows:
        score_arrays, fallback, ignored, extra = _align_scores(
            scores, users, qids, keys, keep_q, new_q, qk, c_sorted, scores_file)
        info["ignored_score_rows"] = ignored
        if extra["pool_weight"]:
            info["_pool_weights"] = extra["pool_weight"]
        if extra["sigma"]:
            info["_sigmas"] = extra["sigma"]
    # per-candidate columns the training-free selectors read, in pool order
    info["_candidate_columns"] = {c: candidates[c].to_numpy(zero_copy_only=False)[order]
                                  for c in ("text", "logprob", "num_tokens") if c in candidates.column_names}
    pools = bon.Pools(
        users=users[used_users],
        user_codes=user_codes.astype(np.int64),
        query_ids=query_ids,
        offsets=offsets,
        golden={g: gold[g][order] for g in goldens},
        scores=score_arrays,
        fallback_share=fallback,
    )
    return pools, info


def _align_scores(
    scores: pa.Table,
    users: np.ndarray,
    qids: np.ndarray,
    keys: np.ndarray,
    keep_q: np.ndarray,
    new_q: np.ndarray,
    qk: np.ndarray,
    c_sorted: np.ndarray,
    file: str,
) -> tuple[dict[str, np.ndarray], dict[str, float], int, dict[str, dict[str, np.ndarray]]]:
    """Scatter each method's `mu` (and, where a method has them, `sigma` and `pool_weight`) onto the pools'
    candidate order (searchsorted on a combined int key)."""
    _require(scores, ["user_id", "query_id", "cand_idx", "method", "mu"], file)
    method_code, methods_arr = _dict_codes(scores["method"])
    methods = [str(m) for m in methods_arr]
    reserved = [m for m in methods if m in RESERVED_METHODS]
    if reserved:
        raise DataError(f"method names {reserved} are reserved for the built-in selectors", file=file,
                        field="method")
    u = _lookup(scores["user_id"], users)
    q = _lookup(scores["query_id"], qids)
    skey = np.where((u >= 0) & (q >= 0), u * qids.size + q, -1)
    pos = np.searchsorted(keys, skey)
    found = (skey >= 0) & (pos < keys.size) & (keys[np.minimum(pos, keys.size - 1)] == skey)
    known = found.copy()
    known[found] = keep_q[pos[found]]
    ignored = int((~found).sum())
    cidx = scores["cand_idx"].to_numpy(zero_copy_only=False).astype(np.int64)
    mu = _float_col(scores, "mu")
    optional = {c: _float_col(scores, c) for c in ("pool_weight", "sigma") if c in scores.column_names}
    fb = (scores["fallback"].to_numpy(zero_copy_only=False).astype(bool) if "fallback" in scores.column_names
          else np.zeros(scores.num_rows, dtype=bool))
    c_min, width = int(c_sorted.min()), int(c_sorted.max() - c_sorted.min()) + 1
    ckey = qk * width + (c_sorted - c_min)  # strictly increasing: pools are sorted by (query, cand_idx)
    n, n_m = ckey.size, len(methods)
    kept = keys[keep_q]
    rows = np.flatnonzero(known)
    sq, sc, mc = new_q[pos[rows]], cidx[rows], method_code[rows]
    want = sq * width + (sc - c_min)
    at = np.minimum(np.searchsorted(ckey, want), n - 1)
    ok = (sc >= c_min) & (sc < c_min + width) & (ckey[at] == want)
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataError(f"score for a candidate that is not in the candidates table (method {methods[mc[i]]!r})",
                        file=file, record_id=f"{_record(kept, sq[i], users, qids)}/{sc[i]}", field="cand_idx")
    slot = mc * n + at  # one slot per (method, candidate)
    hits = np.bincount(slot, minlength=n_m * n).reshape(n_m, n)
    vals = np.full(n_m * n, np.nan)
    vals[slot] = mu[rows]
    vals = vals.reshape(n_m, n)
    opt_vals = {}
    for c, col in optional.items():
        v = np.full(n_m * n, np.nan)
        v[slot] = col[rows]
        opt_vals[c] = v.reshape(n_m, n)
    extra: dict[str, dict[str, np.ndarray]] = {"pool_weight": {}, "sigma": {}}
    fb_share = np.bincount(mc, fb[rows].astype(np.float64), minlength=n_m) / np.maximum(np.bincount(mc, minlength=n_m), 1)
    out: dict[str, np.ndarray] = {}
    fallback: dict[str, float] = {}
    for mi, m in enumerate(methods):
        if (hits[mi] > 1).any():
            i = int(np.argmax(hits[mi] > 1))
            raise DataError(f"duplicate score rows for method {m!r}", file=file,
                            record_id=f"{_record(kept, qk[i], users, qids)}/{c_sorted[i]}", field="cand_idx")
        if (hits[mi] == 0).any():
            i = int(np.argmin(hits[mi]))
            raise DataError(f"method {m!r} has no score for {int((hits[mi] == 0).sum())} candidate(s); first "
                            "missing", file=file, record_id=f"{_record(kept, qk[i], users, qids)}/{c_sorted[i]}",
                            field="mu")
        bad = ~np.isfinite(vals[mi])
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"non-finite mu ({vals[mi, i]}) for method {m!r}", file=file,
                            record_id=f"{_record(kept, qk[i], users, qids)}/{c_sorted[i]}", field="mu")
        out[m] = vals[mi]
        fallback[m] = float(fb_share[mi])
        for c, v in opt_vals.items():  # all or nothing per method
            if not np.isfinite(v[mi]).any():
                continue
            if not np.isfinite(v[mi]).all():
                i = int(np.argmax(~np.isfinite(v[mi])))
                raise DataError(f"method {m!r} has {c} on some candidates but not on all", file=file,
                                record_id=f"{_record(kept, qk[i], users, qids)}/{c_sorted[i]}", field=c)
            extra[c][m] = v[mi]
    return out, fallback, ignored, extra


def _record(kept_keys: np.ndarray, q: int, users: np.ndarray, qids: np.ndarray) -> str:
    """`user_id/query_id` of kept query `q`."""
    k = kept_keys[q]
    return f"{users[k // qids.size]}/{qids[k % qids.size]}"


def pools_to_tables(pools: bon.Pools, *, mode: str = "eval") -> tuple[pa.Table, pa.Table]:
    """CANDIDATES and SCORES tables (shared schemas) for `pools`, e.g. simulated ones; texts are placeholders."""
    from ttp_ray.data import schema

    q = pools.query_of_candidate
    n = pools.n_candidates
    cand_idx = pa.array((np.arange(n) - pools.offsets[q]).astype(np.int32))

    def strings(codes: np.ndarray, values: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                              pa.array(values.astype(str).tolist())).cast(pa.string())

    users = strings(pools.user_codes[q], pools.users)
    qids = strings(q, pools.query_ids)
    empty = pa.repeat(pa.scalar(""), n)
    cols = {
        "user_id": users, "query_id": qids, "cand_idx": cand_idx, "mode": pa.repeat(pa.scalar(mode), n),
        "query_text": empty, "text": empty, "num_tokens": pa.repeat(pa.scalar(0, pa.int32()), n),
        "logprob": pa.nulls(n, pa.float64()),
        "rouge1": pools.golden.get("rouge1", pa.nulls(n, pa.float64())),
        "rougeL": pools.golden.get("rougeL", pa.nulls(n, pa.float64())),
    }
    candidates = schema.conform(pa.table(cols), schema.CANDIDATES)
    parts = [pa.table({"user_id": users, "query_id": qids, "cand_idx": cand_idx, "method": pa.repeat(pa.scalar(m), n),
                       "mu": s, "sigma": pa.nulls(n, pa.float64()), "fallback": pa.repeat(pa.scalar(False), n),
                       "pool_weight": pa.nulls(n, pa.float64())})
             for m, s in pools.scores.items()]
    scores = schema.conform(pa.concat_tables(parts), schema.SCORES) if parts else schema.empty(schema.SCORES)
    return candidates, scores


# ------------------------------------------------------------------------------------ per-unit stats
@dataclass
class EvalStats:
    """Per-query and per-user results that everything else is aggregated from.

    Curves are on `grid` = 1..M_max (N above a pool's size means the whole pool). `bon[m][g]` is (Q, G) for
    method m (including "oracle") and golden g; correlations use `cfg.golden`, `cfg.correlation`, `cfg.user_rho`.
    """

    grid: np.ndarray
    mean: dict[str, np.ndarray]  # golden -> (Q,) pool mean
    std: dict[str, np.ndarray]  # golden -> (Q,) pool std, ddof=1
    bon: dict[str, dict[str, np.ndarray]]  # method -> golden -> (Q, G)
    rho_q: dict[str, Correlation]  # method -> (Q,)
    rho_u: dict[str, Correlation]  # method -> (U,)

    def to_arrow(self, query_index: np.ndarray, user_index: np.ndarray, user_codes: np.ndarray) -> pa.Table:
        """One row per query with global indices (for Ray Data); per-user values repeat on each query row."""
        cols: dict[str, Any] = {"q": query_index, "u": user_index[user_codes]}
        g_size = self.grid.size
        for g in self.mean:
            cols[f"mean::{g}"] = self.mean[g]
            cols[f"std::{g}"] = self.std[g]
        for m, per_g in self.bon.items():
            for g, arr in per_g.items():
                cols[f"bon::{m}::{g}"] = pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), g_size)
        for m, c in self.rho_q.items():
            cols[f"rho_q::{m}"], cols[f"cs_q::{m}"], cols[f"cg_q::{m}"] = c.rho, c.const_score, c.const_golden
        for m, c in self.rho_u.items():
            cols[f"rho_u::{m}"] = c.rho[user_codes]
            cols[f"cs_u::{m}"] = c.const_score[user_codes]
            cols[f"cg_u::{m}"] = c.const_golden[user_codes]
        return pa.table(cols)

    @classmethod
    def from_arrow(cls, table: pa.Table, n_queries: int, n_users: int, grid: np.ndarray) -> EvalStats:
        """Inverse of `to_arrow` over the concatenated rows of every group."""
        q = table["q"].to_numpy()
        if q.size != n_queries or np.unique(q).size != n_queries:
            raise RuntimeError(f"Ray stats cover {np.unique(q).size} distinct of {n_queries} queries")
        order = np.argsort(q)
        u_sorted = table["u"].to_numpy()[order]
        users_seen, first = np.unique(u_sorted, return_index=True)  # one row (the first query) per user
        if users_seen.size != n_users:
            raise RuntimeError(f"Ray stats cover {users_seen.size} of {n_users} users")

        def col(name: str) -> np.ndarray:
            return table[name].to_numpy(zero_copy_only=False)[order]

        mean, std, bon_d = {}, {}, {}
        rho_q: dict[str, Correlation] = {}
        rho_u: dict[str, Correlation] = {}
        for name in table.column_names:
            kind, _, rest = name.partition("::")
            if kind == "mean":
                mean[rest], std[rest] = col(name), col(f"std::{rest}")
            elif kind == "bon":
                m, _, g = rest.rpartition("::")
                flat = table[name].combine_chunks().flatten().to_numpy().reshape(-1, grid.size)
                bon_d.setdefault(m, {})[g] = flat[order]
            elif kind == "rho_q":
                rho_q[rest] = Correlation(col(name), col(f"cs_q::{rest}"), col(f"cg_q::{rest}"))
            elif kind == "rho_u":
                rho_u[rest] = Correlation(col(name)[first], col(f"cs_u::{rest}")[first],
                                          col(f"cg_u::{rest}")[first])
        return cls(grid=grid, mean=mean, std=std, bon=bon_d, rho_q=rho_q, rho_u=rho_u)


def compute_stats(pools: bon.Pools, cfg: EvaluationConfig, grid_max: int | None = None) -> EvalStats:
    """Exact Best-of-N curves for every method and golden on N = 1..grid_max, plus ρ_q and ρ_u."""
    grid = np.arange(1, (grid_max or int(pools.sizes.max())) + 1)
    mean, std = {}, {}
    curves: dict[str, dict[str, np.ndarray]] = {"oracle": {}}
    for g, gold in pools.golden.items():
        mean[g], std[g], _ = theory.pool_moments(gold, pools.offsets)
        curves["oracle"][g] = bon.exact_bon(gold, None, pools.offsets, grid)
        for m, s in pools.scores.items():
            curves.setdefault(m, {})[g] = bon.exact_bon(gold, s, pools.offsets, grid)
    gold = pools.golden[cfg.golden]
    rho_q, rho_u = {}, {}
    for m, s in pools.scores.items():
        rho_q[m] = query_correlation(gold, s, pools.offsets, cfg.correlation)
        rho_u[m] = user_correlation(gold, s, pools.offsets, pools.user_codes, pools.n_users,
                                    kind=cfg.correlation, mode=cfg.user_rho, rho_q=rho_q[m])
    return EvalStats(grid=grid, mean=mean, std=std, bon=curves, rho_q=rho_q, rho_u=rho_u)


# ------------------------------------------------------------------------------------ the report
def effective_ns(ns: Sequence[int], max_pool: int) -> list[int]:
    """`ns` clipped to the largest pool (values above it become it), sorted and unique."""
    return sorted({min(int(n), int(max_pool)) for n in ns})


def _clean(x: Any) -> Any:
    """JSON-ready: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(float(x)) else None
    return x


def build_report(candidates: pa.Table, scores: pa.Table, cfg: EvaluationConfig, *, dataset: str,
                 profiles: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Evaluate every method in `scores` on the eval pools of `candidates` (schemas CANDIDATES, SCORES);
    `profiles` (user → past outputs) adds the training-free `profile-mbr` selector.

    Returns the report dict (layout: docs/theory.md §7). Its private `_plot_data` entry holds arrays for the
    plots and is dropped by `write_report` from report.json.

    Example:
        >>> report = build_report(pq.read_table("cands.parquet"), pq.read_table("scores.parquet"),
        ...                       EvaluationConfig(), dataset="lamp4")
        >>> print(render_table(report))
    """
    pools, info = pools_from_tables(candidates, scores, required_golden=cfg.golden)
    pools, cols = with_training_free(pools, info, profiles, cfg.mbr_metric)
    report = report_from_pools(pools, cfg, dataset=dataset, data_info=info)
    return finish_training_free(report, pools, cols, cfg)


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
        return report
    texts = list(cols["text"])
    sims = [pairwise_rouge(texts[pools.offsets[q]:pools.offsets[q + 1]], cfg.mbr_metric)
            for q in range(pools.n_queries)]
    report["methods"]["mbr"] = _mbr_entry(report, pools, sims, cfg)
    for m, w in pool_w.items():
        report["methods"][m].update(_pool_rm_entry(report, pools, sims, pools.scores[m], w, cfg))
        report["methods"][m].pop("montecarlo", None)  # the exact-vs-draws cross-check is for per-candidate scores
        # the smooth exact curve was computed from whole-pool μ: plot the subset estimates at `ns` instead
        report.get("_plot_data", {}).get("curves", {}).pop(m, None)
    return report


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


def calibration(mu: np.ndarray, sigma: np.ndarray, golden: np.ndarray,
                offsets: np.ndarray | None = None) -> dict[str, Any]:
    """How well a Prob RM's σ describes its own errors on held-out pools: mean Gaussian NLL of the golden
    scores, and the share of golden scores inside μ ± σ and μ ± 2σ (0.683 and 0.954 if calibrated).

    With `offsets` (query boundaries) the same figures are given `within_query` too: each query's level is
    profiled out first (its 1/σ²-weighted mean residual) and residuals are scaled by √(n/(n−1)), exactly as
    the within-query objective trains σ (docs/theory.md §3d). Selection only uses μ's differences inside a
    query, so for such RMs this is the calibration that matters; queries of one candidate are left out.
    """
    mu, g = np.asarray(mu, dtype=np.float64), np.asarray(golden, dtype=np.float64)
    s = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-12)
    out: dict[str, Any] = _gauss_fit(g - mu, s)
    if offsets is not None:
        sizes = np.diff(np.asarray(offsets))
        q = np.repeat(np.arange(sizes.size), sizes)
        w = 1.0 / s**2
        level = np.bincount(q, w * (g - mu), minlength=sizes.size) / np.bincount(q, w, minlength=sizes.size)
        keep = sizes[q] > 1
        n = sizes[q][keep].astype(np.float64)
        resid = (g - mu - level[q])[keep] * np.sqrt(n / (n - 1))
        out["within_query"] = _gauss_fit(resid, s[keep]) if keep.any() else None
    return out


def _gauss_fit(resid: np.ndarray, s: np.ndarray) -> dict[str, float]:
    z = np.abs(resid) / s
    nll = 0.5 * np.log(2 * np.pi * s**2) + 0.5 * z**2
    return {"nll": float(nll.mean()), "inside_1sigma": float((z <= 1).mean()),
            "inside_2sigma": float((z <= 2).mean()), "mean_sigma": float(s.mean())}


def _mbr_entry(report: dict, pools: bon.Pools, sims: list[np.ndarray], cfg: EvaluationConfig) -> dict[str, Any]:
    """MBR by Monte Carlo over N-subsets (its scores depend on the subset), with standard errors."""
    mc = subset_bon(pools.golden, pools.offsets, report["ns"], lambda q, subs: mbr_from_matrix(sims[q], subs),
                    n_subsets=cfg.mbr_subsets, seed=cfg.seed)
    return _subset_entry(report, pools, mc, cfg, kind="training-free")


_TIE_DECIMALS = 6  # μ comes from float32 heads: differences below ~1e-7 are rounding, not preference


def _pool_rm_entry(report: dict, pools: bon.Pools, sims: list[np.ndarray], mu: np.ndarray, w: np.ndarray,
                   cfg: EvaluationConfig) -> dict[str, Any]:
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
    return entry


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
    return _clean(entry)


def report_from_pools(
    pools: bon.Pools,
    cfg: EvaluationConfig,
    *,
    dataset: str,
    data_info: dict[str, Any] | None = None,
    stats: EvalStats | None = None,
) -> dict:
    """The report from aligned pools; `stats` may be precomputed (the Ray Data path of job.py)."""
    if cfg.golden not in pools.golden:
        raise DataError(f"golden column {cfg.golden!r} not available", file="<candidates>", field=cfg.golden)
    stats = stats if stats is not None else compute_stats(pools, cfg)
    grid = stats.grid
    ns = effective_ns(cfg.ns, int(grid[-1]))
    k_ns = np.asarray(ns) - 1  # grid is 1..M_max
    weights = bon.query_weights(pools.user_codes, cfg.aggregate)
    uw = bon.query_weights(pools.user_codes, "user")
    qw = bon.query_weights(pools.user_codes, "query")
    g0 = cfg.golden
    methods_rm = list(pools.scores)

    def curves_for(per_g: dict[str, np.ndarray] | None, flat_means: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"bon": {}, "bon_query_mean": {}, "bon_user_mean": {}}
        for g in pools.golden:
            arr = np.repeat(stats.mean[g][:, None], grid.size, 1) if flat_means else per_g[g]
            out["bon"][g] = (weights @ arr)[k_ns]
            out["bon_query_mean"][g] = (qw @ arr)[k_ns]
            out["bon_user_mean"][g] = (uw @ arr)[k_ns]
        return out

    u1 = float(weights @ stats.mean[g0])
    oracle_full = weights @ stats.bon["oracle"][g0]  # (G,)
    oracle_gain_full = oracle_full - u1
    scale = float(oracle_gain_full[k_ns[-1]])
    gain_q = stats.bon["oracle"][g0] - stats.mean[g0][:, None]  # (Q, G)

    methods: dict[str, Any] = {
        "oracle": {"kind": "oracle", **curves_for(stats.bon["oracle"])},
        "random": {"kind": "random", **curves_for(None, flat_means=True)},
    }
    plot_curves: dict[str, dict[str, np.ndarray]] = {
        "oracle": {"observed": oracle_full}, "random": {"observed": np.full(grid.size, u1)}}
    fms = {}
    mc_scores: dict[str, np.ndarray | None] = {"oracle": None, **pools.scores}
    mc = (bon.montecarlo_bon(pools.golden[g0], mc_scores, pools.offsets, ns, repeats=cfg.mc_repeats, rng=cfg.seed)
          if cfg.montecarlo else None)
    if mc is not None:
        methods["oracle"]["montecarlo"] = _mc_entry(mc["oracle"], weights, methods["oracle"]["bon"][g0])
    for m in methods_rm:
        fm = failure_modes(stats.rho_q[m], stats.rho_u[m], pools.user_codes,
                           collapse_threshold=cfg.collapse_threshold, hacking_threshold=cfg.hacking_threshold)
        fms[m] = fm
        observed_full = weights @ stats.bon[m][g0]
        paper_full = law.paper_law(u1, oracle_gain_full, fm)
        pql = law.per_query_law(u1, stats.rho_q[m].rho, gain_q, weights, fm)
        entry: dict[str, Any] = {"kind": "rm", **curves_for(stats.bon[m])}
        entry["diagnostics"] = fm.summary()
        entry["law"] = {
            "paper": {"curve": paper_full[k_ns], **law.fit_quality(observed_full[k_ns], paper_full[k_ns],
                                                                   scale=scale, flat_fraction=cfg.flat_fraction)},
            "per_query": {"curve": pql.curve[k_ns],
                          **law.fit_quality(observed_full[k_ns], pql.curve[k_ns], scale=scale,
                                            flat_fraction=cfg.flat_fraction),
                          "contributions": {"healthy": pql.healthy[k_ns], "hacked": pql.hacked[k_ns],
                                            "collapsed": pql.collapsed[k_ns]}},
        }
        entry["oracle_gain_captured"] = (float((observed_full[k_ns[-1]] - u1) / scale) if scale > 0 else None)
        entry["fallback_share"] = pools.fallback_share.get(m, 0.0)
        if mc is not None:
            entry["montecarlo"] = _mc_entry(mc[m], weights, entry["bon"][g0])
        methods[m] = entry
        plot_curves[m] = {"observed": observed_full, "paper_law": paper_full, "per_query_law": pql.curve}

    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "ttp-evaluation",
        "dataset": dataset,
        "golden": g0,
        "goldens": list(pools.golden),
        "aggregate": cfg.aggregate,
        "correlation": cfg.correlation,
        "user_rho": cfg.user_rho,
        "collapse_threshold": cfg.collapse_threshold,
        "ns": ns,
        "data": {
            "users": pools.n_users,
            "queries": pools.n_queries,
            "candidates": pools.n_candidates,
            "pool_size_min": int(pools.sizes.min()),
            "pool_size_max": int(pools.sizes.max()),
            "queries_below_max_n": int((pools.sizes < ns[-1]).sum()),
            **(data_info or {}),
        },
        "methods": methods,
        "theory": _theory_section(stats, pools, weights, ns, oracle_full[k_ns], cfg),
        "config": json.loads(cfg.model_dump_json()),
    }
    if cfg.allocation.enabled and methods_rm:
        report["allocation"] = _allocation_section(stats, pools, cfg)
    report["_plot_data"] = _plot_data(stats, pools, cfg, plot_curves, fms)
    return _clean_keep_private(report)


def _clean_keep_private(report: dict) -> dict:
    private = report.pop("_plot_data", None)
    out = _clean(report)
    if private is not None:
        out["_plot_data"] = private
    return out


def _mc_entry(mc_per_query: np.ndarray, weights: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    curve = weights @ mc_per_query
    return {"curve": curve, "max_abs_diff_vs_exact": float(np.abs(curve - np.asarray(exact)).max())}


def _theory_section(stats: EvalStats, pools: bon.Pools, weights: np.ndarray, ns: list[int],
                    oracle_exact: np.ndarray, cfg: EvaluationConfig) -> dict[str, Any]:
    g0 = cfg.golden
    mean, std, sizes = stats.mean[g0], stats.std[g0], pools.sizes
    scale = float(oracle_exact[-1] - oracle_exact[0])
    out: dict[str, Any] = {"c_n": theory.c_n(ns), "sqrt_2_ln_n": theory.sqrt_2_ln_n(ns),
                           "mean_pool_std": float(weights @ std)}
    variants = {
        "c_n_finite_pool": dict(finite_pool_correction=True, approx=False),
        "c_n_plain": dict(finite_pool_correction=False, approx=False),
        "sqrt_2_ln_n": dict(finite_pool_correction=False, approx=True),
    }
    for name, kw in variants.items():
        pred = weights @ theory.oracle_prediction(mean, std, sizes, ns, **kw)
        out[name] = {"curve": pred, **law.fit_quality(oracle_exact, pred, scale=scale,
                                                      flat_fraction=cfg.flat_fraction)}
    return out


def _allocation_section(stats: EvalStats, pools: bon.Pools, cfg: EvaluationConfig) -> dict[str, Any]:
    g0 = cfg.golden
    a = cfg.allocation
    n_users = pools.n_users
    grid = stats.grid
    n_q = np.bincount(pools.user_codes, minlength=n_users).astype(np.float64)
    min_pool = np.full(n_users, np.iinfo(np.int64).max)
    np.minimum.at(min_pool, pools.user_codes, pools.sizes)
    max_index = np.minimum(min_pool, grid[-1]) - 1
    gain_q = stats.bon["oracle"][g0] - stats.mean[g0][:, None]
    oracle_user_gain = alloc_mod.user_curves(gain_q, pools.user_codes, n_users)
    budgets = [b for b in a.budgets if b <= grid[-1]]
    out: dict[str, Any] = {"lambda": a.lam, "predictor": a.predictor, "budgets": budgets,
                           "note": "in-sample: predictions and exact curves come from the same pools",
                           "methods": {}}
    for m in pools.scores:
        if a.predictor == "user_law":
            pred = stats.rho_u[m].rho[:, None] * oracle_user_gain
        else:
            pred = alloc_mod.user_curves(stats.rho_q[m].rho[:, None] * gain_q, pools.user_codes, n_users)
        exact_user = alloc_mod.user_curves(stats.bon[m][g0], pools.user_codes, n_users)
        out["methods"][m] = alloc_mod.evaluate_allocation(pred, exact_user, grid, n_q, budgets, lam=a.lam,
                                                          max_index=max_index)
    return out


def _plot_data(stats: EvalStats, pools: bon.Pools, cfg: EvaluationConfig,
               curves: dict[str, dict[str, np.ndarray]], fms: dict[str, Any]) -> dict[str, Any]:
    """Arrays the plots need (kept in memory only)."""
    g0 = cfg.golden
    data: dict[str, Any] = {"grid": stats.grid, "curves": curves, "threshold": cfg.collapse_threshold,
                            "rho_u": {m: c.rho[c.informative] for m, c in stats.rho_u.items()},
                            "alpha": {m: fm.alpha for m, fm in fms.items()}}
    rms = list(pools.scores)
    pair = [m for m in cfg.scatter_methods if m in pools.scores]
    if len(pair) < 2 and len(rms) >= 2:
        pair = sorted(rms)[:2]
    if len(pair) == 2:
        a, b = pair
        both = stats.rho_q[a].informative
        data["scatter"] = {"x_method": a, "y_method": b, "x": stats.rho_q[a].rho[both],
                           "y": stats.rho_q[b].rho[both],
                           "collapsed": fms[a].collapsed_users[pools.user_codes][both]}
        inf_u = stats.rho_u[a].informative
        if inf_u.any():
            score = np.where(inf_u, stats.rho_u[b].rho - stats.rho_u[a].rho, -np.inf)
            collapsed = inf_u & fms[a].collapsed_users
            if collapsed.any():
                score = np.where(collapsed, score, -np.inf)
            u = int(np.argmax(score))
            qs = np.flatnonzero(pools.user_codes == u)
            idx = np.concatenate([np.arange(pools.offsets[q], pools.offsets[q + 1]) for q in qs])
            data["collapsed_user"] = {
                "user_id": str(pools.users[u]), "golden_name": g0, "golden": pools.golden[g0][idx],
                "methods": {a: pools.scores[a][idx], b: pools.scores[b][idx]},
                "rho": {a: float(stats.rho_u[a].rho[u]), b: float(stats.rho_u[b].rho[u])},
                "collapsed": bool(fms[a].collapsed_users[u]),
            }
    return data


# ------------------------------------------------------------------------------------ rendering
def _fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _table_block(report: dict) -> list[str]:
    ns = report["ns"]
    n1, nmax = ns[0], ns[-1]
    goldens = [g for g in GOLDENS if g in report.get("goldens", [])]
    d = report["data"]
    lines = [f"dataset: {report['dataset']}   golden: {report['golden']}   aggregate: {report['aggregate']}   "
             f"queries: {d['queries']}   users: {d['users']}   pool: {d['pool_size_min']}-{d['pool_size_max']}"]
    head = f"{'method':<14}"
    for g in goldens:
        head += f"{SHORT[g] + '@' + str(n1):>9}{SHORT[g] + '@' + str(nmax):>9}"
    head += f"{'alpha':>8}{'beta':>8}{'law R2':>9}{'pq R2':>9}"
    lines += [head, "-" * len(head)]
    for m, e in report["methods"].items():
        row = f"{m:<14}"
        for g in goldens:
            row += f"{_fmt(e['bon'][g][0]):>9}{_fmt(e['bon'][g][-1]):>9}"
        if e["kind"] == "rm":
            dg = e["diagnostics"]
            r2 = [("flat" if e["law"][v]["flat"] else _fmt(e["law"][v]["r2"], ".3f")) for v in ("paper", "per_query")]
            row += f"{_fmt(dg['alpha'], '.3f'):>8}{_fmt(dg['beta'], '.3f'):>8}{r2[0]:>9}{r2[1]:>9}"
        else:
            row += f"{'-':>8}{'-':>8}{'-':>9}{'-':>9}"
        lines.append(row)
    return lines


def render_table(report: dict) -> str:
    """Fixed-width table: ROUGE-1/L at the smallest and largest N per method, α, β, law R² (paper, per-query).

    Accepts a single report or a `merge_reports` result (one block per dataset).
    """
    if report.get("kind") == "ttp-evaluation-merged":
        blocks = ["\n".join(_table_block(r)) for r in report["datasets"].values()]
        return "\n\n".join(blocks)
    return "\n".join(_table_block(report))


def merge_reports(reports: list[dict]) -> dict:
    """Combine per-dataset reports: {"kind": "ttp-evaluation-merged", "datasets": {name: report}, "summary"}.

    `summary[method][dataset]` holds the headline numbers (golden at N=1 and N=max, α, β, law R², gain captured).
    """
    if not reports:
        raise ValueError("merge_reports needs at least one report")
    datasets: dict[str, dict] = {}
    for r in reports:
        name = r["dataset"]
        if name in datasets:
            raise ValueError(f"two reports for dataset {name!r}")
        datasets[name] = {k: v for k, v in r.items() if k != "_plot_data"}
    summary: dict[str, dict[str, Any]] = {}
    for name, r in datasets.items():
        g = r["golden"]
        for m, e in r["methods"].items():
            row = {"golden": g, "n1": r["ns"][0], "n_max": r["ns"][-1], "at_n1": e["bon"][g][0],
                   "at_n_max": e["bon"][g][-1]}
            if e["kind"] == "rm":
                row.update(alpha=e["diagnostics"]["alpha"], beta=e["diagnostics"]["beta"],
                           law_r2=e["law"]["paper"]["r2"], per_query_law_r2=e["law"]["per_query"]["r2"])
            if "oracle_gain_captured" in e:
                row["oracle_gain_captured"] = e["oracle_gain_captured"]
            summary.setdefault(m, {})[name] = row
    return {"schema_version": REPORT_SCHEMA_VERSION, "kind": "ttp-evaluation-merged", "datasets": datasets,
            "summary": summary}


def render_markdown(report: dict, plots: dict[str, str] | None = None) -> str:
    """report.md: the headline table, diagnostics, law fit, theory fit, paper protocol, allocation, plots."""
    g0 = report["golden"]
    ns = report["ns"]
    md = [f"# TTP evaluation: {report['dataset']}", "",
          f"Golden score `{g0}`; curves are the exact expected Best-of-N over all N-subsets of each pool, "
          f"aggregated as the mean over {'queries' if report['aggregate'] == 'query' else 'users'}.", "",
          "```", render_table(report), "```", "", f"## Best-of-N ({g0})", "",
          "| method | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for m, e in report["methods"].items():
        md.append(f"| {m} | " + " | ".join(_fmt(v) for v in e["bon"][g0]) + " |")
    md += ["", "How each method was evaluated: oracle, random, the reward models and the log-prob selectors by the "
           "exact expectation over all N-subsets (one fixed score per candidate); "
           + ("MBR, whose score of a candidate depends on the other candidates, by Monte Carlo over "
              f"{report['methods']['mbr']['n_subsets']} subsets per pool and N (fixed seed; "
              "standard error at N=max "
              f"{_fmt(report['methods']['mbr']['se'][g0][-1])})." if "mbr" in report["methods"] else "no MBR (no texts).")]
    pool_aware = [m for m, e in report["methods"].items() if e.get("pool_aware")]
    if pool_aware:
        md += ["", f"Pool-aware RMs ({', '.join(pool_aware)}) read the other candidates (consensus), so they are "
               "re-scored on the same Monte-Carlo subsets as MBR (exact per subset: μ is affine in consensus; "
               "s.e. at N=max " + ", ".join(f"{m} {_fmt(report['methods'][m]['se'][g0][-1])}" for m in pool_aware)
               + "). Their diagnostics below use the whole-pool μ."]
    cal = {m: e["calibration"] for m, e in report["methods"].items() if e.get("calibration")}
    if cal:
        md += ["", "## Calibration of σ on the evaluation pools (held out from RM training)", "",
               "Absolute: golden vs μ ± σ. Within query: each query's level profiled out first (selection "
               "reads only μ's differences inside a query; the within-query objective trains σ for this).", "",
               "| method | NLL | inside μ ± σ (0.683 if calibrated) | inside μ ± 2σ (0.954) | mean σ "
               "| within-query NLL | inside μ ± σ | inside μ ± 2σ |", "|---|---|---|---|---|---|---|---|"]
        for m, c in cal.items():
            wq = c.get("within_query") or {}
            md.append(f"| {m} | {_fmt(c['nll'], '.3f')} | {_fmt(c['inside_1sigma'], '.3f')} | "
                      f"{_fmt(c['inside_2sigma'], '.3f')} | {_fmt(c['mean_sigma'], '.3f')} | "
                      f"{_fmt(wq.get('nll'), '.3f')} | {_fmt(wq.get('inside_1sigma'), '.3f')} | "
                      f"{_fmt(wq.get('inside_2sigma'), '.3f')} |")
    rms = {m: e for m, e in report["methods"].items() if e["kind"] == "rm"}
    if rms:
        md += ["", "## Diagnostics and the scaling law", "",
               f"α = share of users with ρ_u < {report['collapse_threshold']} ({report['user_rho']} "
               f"{report['correlation']}); β = share of non-collapsed users' queries with ρ_q < 0.", "",
               "| method | α | β | ρ̄⁺ | ρ̄⁻ | mean ρ_u | paper law R² | max err | per-query law R² | max err "
               "| oracle gain captured | fallback |", "|---|" + "---|" * 11]
        for m, e in rms.items():
            d, lp, lq = e["diagnostics"], e["law"]["paper"], e["law"]["per_query"]
            md.append(f"| {m} | {_fmt(d['alpha'], '.3f')} | {_fmt(d['beta'], '.3f')} | {_fmt(d['rho_pos'], '.3f')} "
                      f"| {_fmt(d['rho_neg'], '.3f')} | {_fmt(d['mean_rho_u'], '.3f')} | "
                      f"{'flat' if lp['flat'] else _fmt(lp['r2'], '.3f')} | {_fmt(lp['max_abs_error'])} | "
                      f"{'flat' if lq['flat'] else _fmt(lq['r2'], '.3f')} | {_fmt(lq['max_abs_error'])} | "
                      f"{_fmt(e['oracle_gain_captured'], '.2f')} | {_fmt(e['fallback_share'], '.2f')} |")
        md += ["", "R² is over the N grid against the observed curve's variation around its mean; 'flat' marks an "
               "observed curve too flat for R² to mean anything (read the max abs error)."]
    th = report["theory"]
    md += ["", "## Oracle theory fit (Theorem 3.1: μ + σ·c_N per pool)", "",
           "| prediction | " + " | ".join(f"N={n}" for n in ns) + " | R² | max err |", "|---|" + "---|" * (len(ns) + 2),
           "| exact oracle | " + " | ".join(_fmt(v) for v in report["methods"]["oracle"]["bon"][g0]) + " | | |"]
    for name in ("c_n_finite_pool", "c_n_plain", "sqrt_2_ln_n"):
        t = th[name]
        md.append(f"| {name} | " + " | ".join(_fmt(v) for v in t["curve"]) + f" | {_fmt(t['r2'], '.3f')} | "
                  f"{_fmt(t['max_abs_error'])} |")
    if any("montecarlo" in e for e in report["methods"].values()):
        md += ["", "## Paper protocol (Monte Carlo, draw N of M, repeats averaged) vs exact", "",
               "| method | max abs diff vs exact |", "|---|---|"]
        for m, e in report["methods"].items():
            if "montecarlo" in e:
                md.append(f"| {m} | {_fmt(e['montecarlo']['max_abs_diff_vs_exact'])} |")
    if "allocation" in report:
        a = report["allocation"]
        md += ["", f"## Compute-optimal N per user (λ={a['lambda']}, predictor {a['predictor']}; {a['note']})", "",
               "| method | budget | uniform | allocated | oracle-allocated | Δ vs uniform | mean N |", "|---|" + "---|" * 6]
        for m, rows in a["methods"].items():
            for r in rows:
                md.append(f"| {m} | {r['budget']} | {_fmt(r['uniform'])} | {_fmt(r['allocated'])} | "
                          f"{_fmt(r['oracle_allocated'])} | {_fmt(r['gain_vs_uniform'], '+.4f')} | "
                          f"{_fmt(r['mean_n_allocated'], '.2f')} |")
    if plots:
        md += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()]
    return "\n".join(md) + "\n"


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and (when the report carries plot data and `plots` is on) the PNGs."""
    from ttp_ray.evaluation import plots as plots_mod

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_data = report.get("_plot_data")
    want_plots = report.get("config", {}).get("plots", True)
    written: dict[str, Path] = {}
    if want_plots:
        written.update(plots_mod.write_plots(report, plot_data, out))
    public = {k: v for k, v in report.items() if k != "_plot_data"}
    public["plots"] = {k: p.name for k, p in written.items()}
    (out / "report.json").write_text(json.dumps(public, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(public, public["plots"]))
    written["report.json"] = out / "report.json"
    written["report.md"] = out / "report.md"
    return written
