"""Spread over reward-model seeds: retrain and re-evaluate the RMs on the same candidate pools.

Generation is the expensive stage and its pools are fixed data for the RMs, so the seed spread reuses one run's
`data/` and `candidates/` (symlinked into `<run_dir>/seeds/seed-<s>/`) and reruns only train + evaluate with
`training.seed = s` (splits, initialisation, batch order). It measures how much of a headline number is RM
training noise; pool noise (another generation seed) needs another full run.

    python jobs/seed_spread.py --config ttp_ray/configs/commits.yaml --seeds 0 1 2 3 4

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


def summarize_seeds(reports: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean / sd / min / max over seeds of each method's headline numbers, per dataset.

    Args:
        reports: seed -> merged pipeline report (`report.json`: its `summary[method][dataset]` rows).
    Returns:
        {"seeds": [...], "datasets": {dataset: {method: {metric: {mean, sd, min, max}}}}}; metrics are
        `at_n1`, `at_n_max`, and for RMs `oracle_gain_captured`, `alpha`, `beta`.
    """
    if not reports:
        raise ValueError("summarize_seeds needs at least one report")
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for seed in sorted(reports):
        for method, per_ds in reports[seed]["summary"].items():
            for ds, row in per_ds.items():
                for k in ("at_n1", "at_n_max", "oracle_gain_captured", "alpha", "beta"):
                    if row.get(k) is not None:
                        values.setdefault(ds, {}).setdefault(method, {}).setdefault(k, []).append(float(row[k]))
    return {"seeds": sorted(reports),
            "datasets": {ds: {m: {k: _stats(v) for k, v in ms.items()} for m, ms in per.items()}
                         for ds, per in values.items()}}


def _cell(ms: Mapping[str, Mapping[str, float]], key: str, fmt: str) -> str:
    s = ms.get(key)
    return "-" if s is None else f"{s['mean']:{fmt}} ± {s['sd']:{fmt}}"


def render_seed_table(summary: Mapping[str, Any]) -> str:
    """One block per dataset: method, value at N=max and share of the oracle gain (mean ± sd over seeds)."""
    lines = [f"RM seeds: {summary['seeds']} (same candidate pools; mean ± sd)"]
    for ds, per in summary["datasets"].items():
        lines += ["", f"dataset: {ds}", f"{'method':<14}{'@N=max':>18}{'gain captured':>18}{'alpha':>14}{'beta':>14}"]
        for m, ms in per.items():
            lines.append(f"{m:<14}{_cell(ms, 'at_n_max', '.4f'):>18}{_cell(ms, 'oracle_gain_captured', '.3f'):>18}"
                         f"{_cell(ms, 'alpha', '.2f'):>14}{_cell(ms, 'beta', '.2f'):>14}")
    return "\n".join(lines)
