"""Spread over reward-model seeds and, optionally, generation seeds.

Generation is the expensive stage and its pools are fixed data for the RMs, so the RM seed axis reuses one run's
`data/` and `candidates/` (symlinked into `<run>/seeds/seed-<s>/`) and reruns only train + evaluate with every
RM seed set to s (splits, initialisation, batch order). That measures RM training noise. The generation axis
(`--gen-seeds`) measures pool noise: each generation seed g other than the config's own gets a full data +
generate run in `<run_dir>/gen/gen-<g>/` (`generation.engine.seed = g`) and the same RM seeds on its pools.

    python jobs/seed_spread.py --config ttp_ray/configs/commits.yaml --seeds 0 1 2 [--gen-seeds 0 1 2]

The summary's `datasets` block is over every (generation, RM) seed pair; `by_generation` has the RM-seed
spread of each generation seed, and `spread` splits the sd into its two sources.

This module is the pure part (links, summary, table); `ttp_ray.pipeline.run_seed_spread` runs the stages.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SHARED_DIRS = ("data", "candidates")


def seed_run_dir(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / "seeds" / f"seed-{seed}"


def link_shared(run_dir: Path, seed: int) -> Path:
    """`seeds/seed-<s>/` with `data/` and `candidates/` linked to the base run's (read-only for train/evaluate)."""
    out = seed_run_dir(run_dir, seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHARED_DIRS:
        src, dst = (Path(run_dir) / name).resolve(), out / name
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: run the data and generate stages first (ttp pipeline --config ...)")
        if not dst.exists():
            dst.symlink_to(src, target_is_directory=True)
    return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def gen_run_dir(run_dir: Path, gen_seed: int, base_seed: int) -> Path:
    """Where generation seed `gen_seed` runs: the run itself for the config's own seed, else `gen/gen-<g>/`."""
    return Path(run_dir) if gen_seed == base_seed else Path(run_dir) / "gen" / f"gen-{gen_seed}"


def summarize_spread(reports: Mapping[tuple[int, int], Mapping[str, Any]]) -> dict[str, Any]:
    """`summarize_seeds` over (generation seed, RM seed) pairs, plus each generation seed's own RM spread.

    Returns the `summarize_seeds` layout over all pairs (so `datasets → ds → method → metric → {mean, sd}` is read
    the same with one generation seed or several) with `generation_seeds`, `by_generation` {g: summarize_seeds
    of g's RM seeds} and `spread` {ds: {method: {"sd_rm": mean within-generation sd, "sd_generation": sd of the
    generation means}}} of the share of the oracle gain.
    """
    if not reports:
        raise ValueError("summarize_spread needs at least one report")
    gens = sorted({g for g, _ in reports})
    flat = summarize_seeds({i: r for i, (_, r) in enumerate(sorted(reports.items()))})
    flat["seeds"] = sorted({s for _, s in reports})
    flat["generation_seeds"] = gens
    by_gen = {g: summarize_seeds({s: r for (gg, s), r in reports.items() if gg == g}) for g in gens}
    flat["by_generation"] = {str(g): v for g, v in by_gen.items()}
    spread: dict[str, dict[str, dict[str, float]]] = {}
    for ds, per in flat["datasets"].items():
        for m in per:
            cells = [by_gen[g]["datasets"].get(ds, {}).get(m, {}).get("oracle_gain_captured") for g in gens]
            cells = [c for c in cells if c is not None]
            if cells:
                means = [c["mean"] for c in cells]
                spread.setdefault(ds, {})[m] = {
                    "sd_rm": statistics.fmean(c["sd"] for c in cells),
                    "sd_generation": statistics.stdev(means) if len(means) > 1 else 0.0}
    flat["spread"] = spread
    return flat


def summarize_seeds(reports: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean / sd / min / max over seeds of each method's headline numbers, per dataset.

    Args:
        reports: seed -> merged pipeline report (`report.json`: its `summary[method][dataset]` rows).
    Returns:
        {"seeds": [...], "datasets": {dataset: {method: {metric: {mean, sd, min, max}}}}}; metrics are
        `at_n1`, `at_n_max`, and for RMs `oracle_gain_captured`, `alpha`, `beta` and, against the best
        training-free selector (report `paired`), `vs_best_free` (share difference) with its interval over
        users `vs_best_free_ci_lo` / `_hi`.
    """
    if not reports:
        raise ValueError("summarize_seeds needs at least one report")
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for seed in sorted(reports):
        for method, per_ds in reports[seed]["summary"].items():
            for ds, row in per_ds.items():
                for k in ("at_n1", "at_n_max", "oracle_gain_captured", "alpha", "beta", "vs_best_free",
                          "vs_best_free_ci_lo", "vs_best_free_ci_hi"):
                    if row.get(k) is not None:
                        values.setdefault(ds, {}).setdefault(method, {}).setdefault(k, []).append(float(row[k]))
    return {"seeds": sorted(reports),
            "datasets": {ds: {m: {k: _stats(v) for k, v in ms.items()} for m, ms in per.items()}
                         for ds, per in values.items()}}


def _cell(ms: Mapping[str, Mapping[str, float]], key: str, fmt: str) -> str:
    s = ms.get(key)
    return "-" if s is None else f"{s['mean']:{fmt}} ± {s['sd']:{fmt}}"


def _paired_cell(ms: Mapping[str, Mapping[str, float]]) -> str:
    """The share difference to the best training-free selector (mean ± sd over seeds) and the mean interval."""
    d, lo, hi = ms.get("vs_best_free"), ms.get("vs_best_free_ci_lo"), ms.get("vs_best_free_ci_hi")
    if d is None:
        return ""
    return f"{d['mean']:+.3f} ± {d['sd']:.3f}" + (f" [{lo['mean']:+.3f}, {hi['mean']:+.3f}]" if lo and hi else "")


def render_seed_table(summary: Mapping[str, Any]) -> str:
    """One block per dataset: method, value at N=max and share of the oracle gain (mean ± sd over seeds)."""
    gens = summary.get("generation_seeds", [])
    lines = [f"RM seeds: {summary['seeds']} (same candidate pools; mean ± sd)" if len(gens) <= 1 else
             f"RM seeds {summary['seeds']} × generation seeds {gens} (mean ± sd over all pairs)"]
    for ds, per in summary["datasets"].items():
        lines += ["", f"dataset: {ds}", f"{'method':<14}{'@N=max':>18}{'gain captured':>18}{'alpha':>14}{'beta':>14}"
                  f"  {'vs best training-free (interval over users)'}"]
        for m, ms in per.items():
            lines.append(f"{m:<14}{_cell(ms, 'at_n_max', '.4f'):>18}{_cell(ms, 'oracle_gain_captured', '.3f'):>18}"
                         f"{_cell(ms, 'alpha', '.2f'):>14}{_cell(ms, 'beta', '.2f'):>14}  {_paired_cell(ms)}")
        spread = summary.get("spread", {}).get(ds, {})
        if len(gens) > 1 and spread:
            lines += ["", "sd of the share of the oracle gain, by source: " + ", ".join(
                f"{m} rm {v['sd_rm']:.3f} / generation {v['sd_generation']:.3f}" for m, v in spread.items())]
    return "\n".join(lines)
