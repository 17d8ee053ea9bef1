"""Benchmark: exact Best-of-N curves + every diagnostic for ~1M candidates, against the paper's Monte Carlo.

    .venv/bin/python benchmarks/evaluation.py [--users 3334 --queries-per-user 10 --pool-size 30 --seeds 5]
    .venv/bin/python benchmarks/evaluation.py --candidates c.parquet --scores s.parquet   # real tables

Synthetic data: bivariate-normal pools with planted collapse/hacking for 4 reward models, ROUGE-like golden
(clipped to [0, 1], rounded to 1/50: ties). Timed, after an untimed warm-up on a small slice:
  align          Arrow CANDIDATES + SCORES -> aligned pools (validation included)
  exact_curves   exact expected BoN on the ns grid, oracle + every RM (the like-for-like of Monte Carlo)
  exact          everything the report computes except Monte Carlo: curves for N = 1..M on both goldens,
                 ρ_q, ρ_u, α, β, ρ̄±, both laws and their fit, theory fit, allocation
  montecarlo     the paper protocol (N of M without replacement, 3 repeats) for the same methods and grid
The Monte-Carlo protocol is also repeated over seeds: its std across seeds and max |MC − exact| show the noise
the exact computation removes. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow.parquet as pq

from ttp_ray.evaluation import bon
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.pools_io import pools_from_tables, pools_to_tables
from ttp_ray.evaluation.report import report_from_pools
from ttp_ray.evaluation.stats import compute_stats
from ttp_ray.evaluation.theory import PlantedRM, simulate_pools

RMS = {
    "global-det": PlantedRM(0.3, 0.4, alpha=0.4, beta=0.3),
    "global-prob": PlantedRM(0.45, 0.4, alpha=0.25, beta=0.2),
    "user-det": PlantedRM(0.5, 0.5, alpha=0.3, beta=0.25),
    "user-prob": PlantedRM(0.7, 0.4, alpha=0.1, beta=0.1),
}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=3334)
    ap.add_argument("--queries-per-user", type=int, default=10)
    ap.add_argument("--pool-size", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=5, help="Monte-Carlo runs for its variance")
    ap.add_argument("--repeats", type=int, default=3, help="Monte-Carlo repeats per (query, N), as in the paper")
    ap.add_argument("--candidates", help="CANDIDATES Parquet (real data instead of synthetic)")
    ap.add_argument("--scores", help="SCORES Parquet")
    args = ap.parse_args()

    if args.candidates:
        cands, scores = pq.read_table(args.candidates), pq.read_table(args.scores)
    else:
        sim = simulate_pools(RMS, n_users=args.users, queries_per_user=args.queries_per_user,
                             pool_size=args.pool_size, clip01=True, seed=0)
        cands, scores = pools_to_tables(sim)
    cfg = EvaluationConfig(plots=False, montecarlo=False, mc_repeats=args.repeats)

    # untimed warm-up on a small slice (imports, c_N quadrature, weight caches)
    warm_c, warm_s = cands.slice(0, 3000), scores.filter(np.isin(scores["query_id"].to_numpy(zero_copy_only=False),
                                                                 np.unique(cands["query_id"][:3000])))
    warm, _ = pools_from_tables(warm_c, warm_s)
    report_from_pools(warm, cfg, dataset="warmup")

    (pools, info), t_align = timed(pools_from_tables, cands, scores)
    ns = [n for n in cfg.ns if n <= pools.sizes.max()]
    g = pools.golden[cfg.golden]
    sel: dict[str, np.ndarray | None] = {"oracle": None, **pools.scores}
    exact_curves, t_curves = timed(lambda: {m: bon.exact_bon(g, s, pools.offsets, ns) for m, s in sel.items()})
    stats, t_stats = timed(compute_stats, pools, cfg)
    report, t_report = timed(report_from_pools, pools, cfg, dataset="benchmark", data_info=info, stats=stats)
    _, t_mc = timed(bon.montecarlo_bon, g, sel, pools.offsets, ns, repeats=args.repeats, rng=0)
    runs = [bon.montecarlo_bon(g, sel, pools.offsets, ns, repeats=args.repeats, rng=s) for s in range(args.seeds)]

    mc_stats = {}
    for m in sel:
        exact = exact_curves[m].mean(0)
        agg = np.stack([r[m].mean(0) for r in runs])
        mc_stats[m] = {"mc_std_max": float(agg.std(0, ddof=1).max()) if args.seeds > 1 else 0.0,
                       "mc_max_abs_error": float(np.abs(agg - exact).max())}
    rms = [m for m in report["methods"] if report["methods"][m]["kind"] == "rm"]
    law = {m: {"paper_r2": report["methods"][m]["law"]["paper"]["r2"],
               "per_query_r2": report["methods"][m]["law"]["per_query"]["r2"],
               "paper_max_abs_error": report["methods"][m]["law"]["paper"]["max_abs_error"],
               "alpha": report["methods"][m]["diagnostics"]["alpha"],
               "beta": report["methods"][m]["diagnostics"]["beta"]} for m in rms}

    print(f"candidates {pools.n_candidates:,}  queries {pools.n_queries:,}  users {pools.n_users:,}  "
          f"methods {len(rms)}")
    print(f"align (Arrow -> pools)              {t_align:7.3f} s")
    print(f"exact curves, ns grid, {len(sel)} selectors  {t_curves:7.3f} s")
    print(f"exact: stats + diagnostics + report {t_stats + t_report:7.3f} s  "
          f"(stats {t_stats:.3f}, aggregation/law/theory/allocation {t_report:.3f})")
    print(f"Monte Carlo ({args.repeats} repeats)            {t_mc:7.3f} s  "
          f"({t_mc / t_curves:.1f}x the exact curves' time)")
    for m, v in mc_stats.items():
        print(f"  {m:<12} MC std across {args.seeds} seeds (max over N) {v['mc_std_max']:.5f}   "
              f"max |MC - exact| {v['mc_max_abs_error']:.5f}")
    for m, v in law.items():
        print(f"  {m:<12} α {v['alpha']:.3f}  β {v['beta']:.3f}  law R² paper {v['paper_r2']:.3f}  "
              f"per-query {v['per_query_r2']:.3f}")
    print(json.dumps({
        "candidates": pools.n_candidates, "queries": pools.n_queries, "users": pools.n_users, "methods": len(rms),
        "align_seconds": round(t_align, 4), "exact_curves_seconds": round(t_curves, 4),
        "exact_seconds": round(t_stats + t_report, 4), "montecarlo_seconds": round(t_mc, 4),
        "montecarlo_over_exact_curves": round(t_mc / t_curves, 3),
        "montecarlo": mc_stats, "law": law,
    }))


if __name__ == "__main__":
    main()
