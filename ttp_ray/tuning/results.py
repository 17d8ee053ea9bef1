"""What a sweep leaves behind: the trial table (CSV + Parquet), per-epoch curves, the plot, and best.yaml.

Pure pandas/matplotlib on plain records, so it is testable without Ray; `sweep.py` turns Tune's `ResultGrid`
into `TrialRecord`s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ttp_ray.tuning.space import ParamSpec, SearchSpace

CONFIG_PREFIX = "config/"
_METRIC_PREFIXES = ("val_", "global_val_", "epochs_run", "mean_best_epoch")
_STATUS_ORDER = {"completed": 0, "stopped": 1, "error": 2}


@dataclass
class TrialRecord:
    """One trial: its sampled config, its per-epoch metrics (one row per `tune.report`), and any error."""

    trial_id: str
    config: dict[str, Any]
    epochs: pd.DataFrame  # columns: training_iteration, val_* metrics
    finished: bool  # the trainable returned (False: the scheduler stopped it, or it failed)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def trial_tables(records: Iterable[TrialRecord], metric: str, mode: str = "max") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per trial (config + last-epoch metrics + status) and one row per (trial, epoch).

    `status` is `completed` (training returned), `stopped` (the scheduler cut it short) or `error`. `rank` (1 =
    best) orders completed trials by `metric` at their last report, then stopped ones, then errors: a stopped
    trial's last value is from an early epoch, not from the model its configuration trains, and ASHA already
    judged it worse at a rung — so the best configuration always comes from a trial that ran its schedule.
    """
    rows, curves = [], []
    for r in records:
        row: dict[str, Any] = {"trial_id": r.trial_id}
        row.update({CONFIG_PREFIX + k: _scalar(v) for k, v in r.config.items()})
        n = int(r.epochs["training_iteration"].max()) if len(r.epochs) else 0
        row["iterations"] = n
        row["status"] = "error" if r.error else ("completed" if r.finished else "stopped")
        row["error"] = r.error
        if len(r.epochs):
            last = r.epochs.sort_values("training_iteration").iloc[-1]
            row.update({k: last[k] for k in r.epochs.columns if k.startswith(_METRIC_PREFIXES)})
            if metric in r.epochs:
                best = r.epochs[metric].max() if mode == "max" else r.epochs[metric].min()
                row[f"best_{metric}"] = best
            ep = r.epochs.copy()
            ep.insert(0, "trial_id", r.trial_id)
            curves.append(ep)
        row.update(r.extra)
        rows.append(row)
    trials = pd.DataFrame(rows)
    if metric in trials:
        status_order = trials["status"].map(_STATUS_ORDER)
        key = trials[metric] if mode == "min" else -trials[metric]
        order = np.lexsort((key.fillna(np.inf).to_numpy(), status_order.to_numpy()))
        trials = trials.iloc[order]
        trials.insert(1, "rank", np.arange(1, len(trials) + 1))
    trials = trials.reset_index(drop=True)
    epochs = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["trial_id"])
    return trials, epochs


def write_tables(trials: pd.DataFrame, epochs: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """results.csv + results.parquet (one row per trial) and epochs.parquet (one row per trial-epoch)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "parquet": out / "results.parquet", "epochs": out / "epochs.parquet"}
    trials.to_csv(paths["csv"], index=False)
    _arrow_safe(trials).to_parquet(paths["parquet"], index=False)
    _arrow_safe(epochs).to_parquet(paths["epochs"], index=False)
    return paths


def plot_sweep(trials: pd.DataFrame, space: SearchSpace, metric: str, path: str | Path) -> Path:
    """Objective vs each searched hyperparameter; row 1 coloured by collapse rate α, row 2 by hacking rate β.

    Log x-axis for loguniform parameters, jittered categories for `choice`; the best trial is ringed in red,
    trials ASHA stopped are drawn hollow (their metric is from an earlier epoch).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = [k for k, v in space.items() if isinstance(v, ParamSpec)]
    ok = trials[trials["status"] != "error"] if "status" in trials else trials
    ok = ok[ok[metric].notna()] if metric in ok else ok.iloc[0:0]
    ncol = max(1, len(params))
    fig, axes = plt.subplots(2, ncol, figsize=(3.0 * ncol + 1.2, 6.4), squeeze=False, sharey=True)
    colours = (("val_alpha", "α (collapse rate)"), ("val_beta", "β (hacking rate)"))
    rng = np.random.default_rng(0)
    for row, (ckey, clabel) in enumerate(colours):
        # Colour scale from 0 to the sweep's worst rate (at least 0.05), so small rates stay distinguishable.
        top = float(np.nanmax(ok[ckey])) if ckey in ok and ok[ckey].notna().any() else 1.0
        vmax = min(1.0, max(0.05, top))
        for col, name in enumerate(params):
            ax = axes[row][col]
            spec = space[name]
            x = ok[CONFIG_PREFIX + name] if CONFIG_PREFIX + name in ok else pd.Series(dtype=float)
            if spec.distribution == "choice":
                cats = [str(v) for v in spec.values or []]
                xs = np.array([cats.index(str(v)) if str(v) in cats else np.nan for v in x], dtype=float)
                xs = xs + rng.uniform(-0.15, 0.15, size=len(xs))
                ax.set_xticks(range(len(cats)), cats)
                ax.set_xlim(-0.5, len(cats) - 0.5)
            else:
                xs = x.to_numpy(dtype=float)
                if spec.distribution == "loguniform":
                    ax.set_xscale("log")
            c = ok[ckey].to_numpy(dtype=float) if ckey in ok else np.zeros(len(ok))
            stopped = (ok["status"] == "stopped").to_numpy() if "status" in ok else np.zeros(len(ok), bool)
            y = ok[metric].to_numpy(dtype=float)
            ax.scatter(xs[~stopped], y[~stopped], c=_cmap(c[~stopped], vmax), edgecolors="k", linewidths=0.4, s=36)
            ax.scatter(xs[stopped], y[stopped], facecolors="none", edgecolors=_cmap(c[stopped], vmax), linewidths=1.2, s=36)
            if "rank" in ok and (ok["rank"] == 1).any():
                b = int(np.flatnonzero((ok["rank"] == 1).to_numpy())[0])
                ax.scatter([xs[b]], [y[b]], s=160, facecolors="none", edgecolors="red", linewidths=1.6)
            if row == 1:
                ax.set_xlabel(name)
            if col == 0:
                ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        scale = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, vmax), cmap="viridis")
        fig.colorbar(scale, ax=list(axes[row]), label=clabel, fraction=0.02, pad=0.01)
    fig.suptitle(f"{len(ok)} trials: validation {metric} vs hyperparameters (hollow = stopped by ASHA, red = best)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def best_user_stage(trials: pd.DataFrame, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rank-1 trial's user-stage fields (base values, then the sampled ones)."""
    if trials.empty or "rank" not in trials:
        raise ValueError("no trial reported the sweep metric; nothing to pick a best configuration from")
    return trial_user_stage(trials.iloc[0], base)


def trial_user_stage(row: pd.Series, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """One trial's user-stage fields from its table row (base values, then the sampled ones)."""
    out = dict(base or {})
    for k, v in row.items():
        if str(k).startswith(CONFIG_PREFIX):
            out[str(k)[len(CONFIG_PREFIX):]] = _plain(v)
    return out


def write_best_yaml(
    path: str | Path,
    user_stage: dict[str, Any],
    *,
    section: Sequence[str] = ("training", "user_stage"),
    header: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `user_stage` nested under `section` (e.g. training.user_stage), ready for `load_config`."""
    tree: dict[str, Any] = dict(extra or {})
    node = tree
    for key in section[:-1]:
        node = node.setdefault(key, {})
    node[section[-1]] = {k: _plain(v) for k, v in user_stage.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(tree, sort_keys=False)
    path.write_text(text)
    return path


def _cmap(values: np.ndarray, vmax: float = 1.0) -> np.ndarray:
    """RGBA colours for rates in [0, vmax] (an (n, 4) array, so one point is never read as one colour)."""
    import matplotlib

    return matplotlib.colormaps["viridis"](np.clip(np.nan_to_num(values) / vmax, 0.0, 1.0)).reshape(-1, 4)


def _scalar(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def _plain(v: Any) -> Any:
    """numpy scalars → Python (yaml.safe_dump refuses numpy types); NaN → None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    # Columns mixing types (a `choice` of ints and strings) would make pyarrow refuse the frame.
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            kinds = {type(v) for v in out[c].dropna()}
            if len(kinds) > 1:
                out[c] = out[c].map(lambda v: None if v is None else str(v))
    return out
