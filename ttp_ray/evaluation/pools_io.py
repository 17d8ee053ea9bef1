"""CANDIDATES + SCORES Arrow tables ↔ `Pools`: validate and align the tables (every bad record is a DataError
naming it), and the inverse for simulated pools.

`pools_from_tables` is the report's entry point; its data-quality counts go into the report's `data` section.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ttp_ray.errors import DataError
from ttp_ray.evaluation import bon

__all__ = ["GOLDENS", "RESERVED_METHODS", "pools_from_tables", "pools_to_tables"]

log = logging.getLogger(__name__)

GOLDENS = ("rouge1", "rougeL")
RESERVED_METHODS = ("oracle", "random")


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
