"""Text views of a report: the fixed-width headline table (terminal, README) and report.md."""

from __future__ import annotations

from typing import Any

from ttp_ray.evaluation.pools_io import GOLDENS

__all__ = ["render_markdown", "render_table"]

SHORT = {"rouge1": "R1", "rougeL": "RL"}


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


def _paired_block(report: dict) -> list[str]:
    """The RMs against the best training-free selector, paired on the same pools (`ttp_ray.evaluation.paired`)."""
    p = report.get("paired")
    if not p or not p.get("methods"):
        return []
    first = next(iter(p["methods"].values()))
    md = ["", f"## Each RM against the best training-free selector ({p['baseline']}) at N={p['n']}", "",
          f"Share of the oracle gain, RM minus {p['baseline']}, on the same pools; the interval is a cluster "
          f"bootstrap over users ({first['resamples']} resamples, {first['users']} users, {first['queries']} "
          "queries): it shows how far the gap could move had the evaluation drawn other users. An interval that "
          "contains 0 does not tell the two apart.", "",
          f"| method | share − {p['baseline']} | {first['level']:.0%} interval | users where the RM is ahead |",
          "|---|---|---|---|"]
    for m, d in p["methods"].items():
        ci = d.get("ci")
        md.append(f"| {m} | {_fmt(d['share_diff'], '+.3f')} | "
                  + (f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-") + f" | {d['a_better_users']} of {d['users']} |")
    return md


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
    md += _paired_block(report)
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

