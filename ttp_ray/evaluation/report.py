"""The evaluation report: CANDIDATES + SCORES tables in, report.json / report.md / PNGs out.

Pipeline: `pools_io.pools_from_tables` (validate and align the Arrow tables) → `stats.compute_stats` (per-query
exact curves on N = 1..M_max, ρ_q, ρ_u; the part job.py can run as Ray Data tasks) → `report_from_pools`
(aggregation, failure modes, the law, theory fit, Monte-Carlo protocol, allocation) →
`training_free.finish_training_free` (log-prob, MBR, pool-aware RMs, σ calibration) → `write_report`
(report.json, `render.render_markdown`, plots). This module assembles the report dict; the JSON layout is
documented in docs/theory.md §7.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ttp_ray.errors import DataError
from ttp_ray.evaluation import allocation as alloc_mod
from ttp_ray.evaluation import bon, law, theory
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.diagnostics import failure_modes
from ttp_ray.evaluation.jsonable import json_ready
from ttp_ray.evaluation.pools_io import pools_from_tables
from ttp_ray.evaluation.render import render_markdown
from ttp_ray.evaluation.stats import EvalStats, compute_stats
from ttp_ray.evaluation.training_free import finish_training_free, with_training_free

__all__ = ["REPORT_SCHEMA_VERSION", "build_report", "effective_ns", "merge_reports", "report_from_pools",
           "write_report"]

REPORT_SCHEMA_VERSION = "1"


def effective_ns(ns: Sequence[int], max_pool: int) -> list[int]:
    """`ns` clipped to the largest pool (values above it become it), sorted and unique."""
    return sorted({min(int(n), int(max_pool)) for n in ns})



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
    out = json_ready(report)
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
            pair = r.get("paired", {}).get("methods", {}).get(m)
            if pair and pair.get("share_diff") is not None:  # vs the best training-free selector, paired
                row["vs_best_free"] = pair["share_diff"]
                if pair.get("ci"):
                    row["vs_best_free_ci_lo"], row["vs_best_free_ci_hi"] = pair["ci"]
            summary.setdefault(m, {})[name] = row
    return {"schema_version": REPORT_SCHEMA_VERSION, "kind": "ttp-evaluation-merged", "datasets": datasets,
            "summary": summary}


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
