"""Ray Tune sweep over the per-user probabilistic head: Optuna proposes, ASHA stops, exact BoN judges.

    run_tune(run_dir, dataset, cfg)            # features cached by `ttp train` (or --synthetic builds them)
      └ load_sweep_data            {run_dir}/rm/{dataset}/features/frozen/rm_train -> SweepData (one ray.put)
      └ run_sweep                  Tuner(with_parameters(trial, data=...), OptunaSearch, ASHAScheduler)
          └ trial(config)          fit global head + user bank (objective.train_and_score), tune.report/epoch
      └ write_outputs              results.{csv,parquet}, epochs.parquet, sweep.png, best.yaml, summary.json
      └ compare_configs            default vs best re-trained, scored on the eval pools -> compare.{csv,md}

Reports: iteration t <= epochs is user-stage epoch t (the current bank); a trial that runs to the end adds one
last report with `final=1` scoring the model training returns (each user's best epoch). A trial without that
row was stopped by ASHA. Metric and mode are set once, on `TuneConfig` (from `SweepConfig.metric`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ttp_ray.config import dump_resolved, validate
from ttp_ray.errors import TTPValidationError
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.reward.config import UserStageConfig
from ttp_ray.training.config import GlobalStageConfig, TrainingConfig
from ttp_ray.tuning.benchmark import ensure_features, features_dir
from ttp_ray.tuning.compare import compare_configs, write_compare
from ttp_ray.tuning.config import SweepConfig
from ttp_ray.tuning.objective import SweepData, train_and_score
from ttp_ray.tuning.results import (
    TrialRecord,
    best_user_stage,
    plot_sweep,
    trial_tables,
    trial_user_stage,
    write_best_yaml,
    write_tables,
)
from ttp_ray.tuning.space import ParamSpec, SearchSpace, check_space, load_space, max_value, to_param_space

__all__ = ["SweepOutcome", "load_sweep_data", "prepare_space", "run_sweep", "run_tune", "tune_dir"]

log = logging.getLogger(__name__)

# These define the validation split: trials are only comparable when they share it.
_PINNED = ("val_fraction", "seed")


def tune_dir(run_dir: str | Path, dataset: str) -> Path:
    """`{run_dir}/tune/{dataset}`: where a sweep's tables, plot and best.yaml go."""
    return Path(run_dir) / "tune" / dataset


def prepare_space(cfg: SweepConfig) -> tuple[SearchSpace, dict[str, Any], int]:
    """Load and check the space; return it, the fixed user-stage base, and ASHA's max_t (in iterations)."""
    space = load_space(cfg.search_space)
    pinned = sorted(set(space) & set(_PINNED))
    if pinned:
        raise TTPValidationError(
            f"search space must not vary {pinned}: they define the validation split (set them in "
            "tuning.user_stage instead)",
            parameter=pinned[0],
        )
    base = {"seed": cfg.seed, **cfg.user_stage}
    check_space(space, UserStageConfig, base)
    searched = {k for k, v in space.items() if isinstance(v, ParamSpec)}
    for i, point in enumerate(cfg.points_to_evaluate):
        extra, missing = sorted(set(point) - searched), sorted(searched - set(point))
        if extra or missing:  # OptunaSearch rejects partial points; say which names, before Ray starts
            raise TTPValidationError(
                f"points_to_evaluate[{i}] must set exactly the searched parameters {sorted(searched)}; "
                f"not searched: {extra}, missing: {missing}", parameter=f"points_to_evaluate[{i}]")
        validate(UserStageConfig, {**base, **point}, source=f"points_to_evaluate[{i}]")
    base_cfg = validate(UserStageConfig, base, source="tuning.user_stage")
    if base_cfg.val_fraction <= 0:
        raise TTPValidationError("tuning needs a validation split: user_stage.val_fraction must be > 0",
                                 parameter="user_stage.val_fraction", value=base_cfg.val_fraction)
    # +1: a trial that finishes reports its final model after the last epoch (see the module docstring).
    max_t = cfg.asha.max_t or int(max_value(space, "epochs", base_cfg.epochs)) + 1
    if cfg.asha.grace_period > max_t:
        raise TTPValidationError(f"asha.grace_period ({cfg.asha.grace_period}) exceeds max_t ({max_t})",
                                 parameter="asha.grace_period", value=cfg.asha.grace_period)
    return space, base, max_t


def _trial(
    config: dict[str, Any],
    *,
    data: SweepData,
    base: dict[str, Any],
    global_cfg: dict[str, Any],
    ns: list[int] | None,
    eval_cfg: dict[str, Any],
    threads: int,
) -> None:
    """The Tune function trainable: one user-stage configuration, one `tune.report` per epoch."""
    import warnings

    import torch
    from ray import tune

    # `data` arrives zero-copy from the object store, hence read-only; nothing writes to it.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    torch.set_num_threads(threads)  # a trial owns its CPUs; torch's default would oversubscribe the node
    cfg = validate(UserStageConfig, {**base, **config}, source="trial config")

    def report(epoch: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, "final": 0})

    out = train_and_score(
        data, cfg, global_cfg=GlobalStageConfig.model_validate(global_cfg), ns=ns,
        eval_cfg=EvaluationConfig.model_validate(eval_cfg), report=report,
    )
    tune.report({**out.final, "epoch": out.final["epochs_run"], "final": 1})


def _warn_small_validation(data: SweepData, cfg: UserStageConfig) -> None:
    # Measured (docs/tuning.md): with 2 held-out pseudo-queries per user the sweep's winner lost to the default
    # on the test pools; with 4 it won. Say so before spending the sweep.
    mask = data.val_mask(cfg)
    per_user = pd.Series(data.query_ids[mask]).groupby(data.user_idx[mask]).nunique()
    median = float(per_user.median()) if len(per_user) else 0.0
    if median < 4:
        log.warning("validation holds a median of %.0f pseudo-queries per user (%d pools in all): trial differences "
                    "of a few 1e-3 are noise there; generate more RM-training items per user "
                    "(generation.rm_train.items_per_user >= 20) or raise user_stage.val_fraction", median,
                    len(np.unique(data.query_ids[mask])))


class SweepOutcome(dict):
    """`run_sweep`'s result: a dict (JSON-ready summary) with the tables attached as attributes."""

    trials: pd.DataFrame
    epochs: pd.DataFrame


def run_sweep(
    data: SweepData,
    cfg: SweepConfig,
    out_dir: str | Path,
    *,
    training_cfg: TrainingConfig | None = None,
    eval_cfg: EvaluationConfig | None = None,
    pipeline_cfg: Any = None,
) -> SweepOutcome:
    """Run the sweep on in-memory features (needs a running Ray cluster) and write every output to `out_dir`.

    Args:
        data: RM training features (validation = each user's held-out pseudo-queries).
        cfg: the sweep settings.
        out_dir: output folder (created).
        training_cfg: training settings the best config is written into (global-stage optimisation and
            features come from here; default TrainingConfig()).
        eval_cfg: correlation kind and thresholds of α/β (default EvaluationConfig(), as the report uses).
        pipeline_cfg: the run's `PipelineConfig`, if any: best.yaml is then that whole config with
            `training.user_stage` replaced, so `ttp train --config best.yaml` retrains the same run.

    Returns:
        A dict: best config, best/worst metrics, counts, output paths; `.trials` / `.epochs` DataFrames.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    training_cfg = training_cfg or TrainingConfig()
    eval_cfg = eval_cfg or EvaluationConfig()
    space, base, max_t = prepare_space(cfg)
    dump_resolved(cfg, out, "tuning.resolved.yaml")
    _warn_small_validation(data, validate(UserStageConfig, base))

    threads = max(1, int(math.ceil(cfg.resources_per_trial.cpu)))
    trainable = tune.with_parameters(  # puts `data` in the object store once; trials fetch it zero-copy
        _trial,
        data=data,
        base=base,
        global_cfg=training_cfg.global_stage.model_dump(mode="json"),
        ns=cfg.n_grid,
        eval_cfg=eval_cfg.model_dump(mode="json"),
        threads=threads,
    )
    trainable = tune.with_resources(trainable, cfg.resources_per_trial.as_dict())
    points = [dict(p) for p in cfg.points_to_evaluate] or None
    searcher = (
        OptunaSearch(seed=cfg.seed, points_to_evaluate=points)
        if cfg.searcher == "optuna"
        else BasicVariantGenerator(random_state=cfg.seed, points_to_evaluate=points)
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=cfg.asha.grace_period,
        reduction_factor=cfg.asha.reduction_factor,
        brackets=cfg.asha.brackets,
    )
    tuner = tune.Tuner(
        trainable,
        param_space=to_param_space(space),
        tune_config=tune.TuneConfig(
            metric=cfg.metric,  # the one place metric/mode are set
            mode=cfg.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent_trials,
            time_budget_s=cfg.time_budget_s,
            reuse_actors=True,  # a fresh trial process pays seconds of torch imports; the data is per-trial anyway
        ),
        run_config=tune.RunConfig(name=cfg.name, storage_path=str((out / "ray_results").resolve()), verbose=cfg.verbose),
    )
    log.info("tuning %d trials (max_t=%d iterations) on %d users, %d candidates -> %s",
             cfg.num_samples, max_t, data.n_users, len(data.golden), out)
    grid = tuner.fit()

    base_epochs = validate(UserStageConfig, base).epochs
    records = []
    for result in grid:
        df = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
        keep = [c for c in df.columns if c in ("training_iteration", "epoch", "final") or c.startswith(("val_", "global_"))]
        df = df[keep].copy() if len(df) else pd.DataFrame({"training_iteration": []})
        finished = bool(len(df) and "final" in df and (df["final"] == 1).any())
        conf = {k: v for k, v in (result.config or {}).items() if k in space}
        records.append(
            TrialRecord(
                trial_id=str((result.metrics or {}).get("trial_id", result.path.rsplit("/", 1)[-1])),
                config=conf,
                epochs=df,
                finished=finished,
                error=None if result.error is None else f"{type(result.error).__name__}: {result.error}",
                extra={"planned_epochs": int(conf.get("epochs", base_epochs))},
            )
        )
    trials, epochs = trial_tables(records, cfg.metric, cfg.mode)
    if cfg.metric not in trials or trials[cfg.metric].isna().all():
        first = next((r.error for r in records if r.error), "no trial reported any metric")
        raise RuntimeError(f"every trial of the sweep failed; first error: {first} (trial logs: {out / 'ray_results'})")
    if not (trials["status"] == "completed").any():
        log.warning("no trial ran its full schedule (time_budget_s? max_t below epochs?): best.yaml comes from "
                    "a stopped trial's early epoch")
    return _write_outputs(trials, epochs, space, base, cfg, out, training_cfg, max_t, pipeline_cfg)


def _write_outputs(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    space: SearchSpace,
    base: dict[str, Any],
    cfg: SweepConfig,
    out: Path,
    training_cfg: TrainingConfig,
    max_t: int,
    pipeline_cfg: Any = None,
) -> SweepOutcome:
    paths = write_tables(trials, epochs, out)
    paths["plot"] = plot_sweep(trials, space, cfg.metric, out / "sweep.png")
    best_fields = validate(UserStageConfig, best_user_stage(trials, base), source="best trial").model_dump(mode="json")
    # The training settings the config set travel along (features, global stage): `ttp train` reproduces the sweep.
    section = {k: v for k, v in training_cfg.model_dump(mode="json", exclude_unset=True).items() if k != "user_stage"}
    top = trials.iloc[0]
    header = (
        f"Best of {len(trials)} trials of the `{cfg.name}` sweep (ttp_ray.tuning): {cfg.metric} = {top[cfg.metric]:.4f}\n"
        f"on each user's held-out pseudo-queries. Train with: ttp train --config <this file>"
    )
    tree = {} if pipeline_cfg is None else pipeline_cfg.model_dump(mode="json", exclude_unset=True)
    tree["training"] = section
    if pipeline_cfg is not None:
        tree["run_dir"] = str(pipeline_cfg.run_dir)
    paths["best"] = write_best_yaml(out / "best.yaml", best_fields, header=header, extra=tree)
    # The worst trial is the lowest utility any trial reported (a stopped trial's early epoch included).
    ok = trials[trials[cfg.metric].notna()] if cfg.metric in trials else trials.iloc[0:0]
    worst = ok.loc[ok[cfg.metric].idxmin() if cfg.mode == "max" else ok[cfg.metric].idxmax()] if len(ok) else None
    summary: dict[str, Any] = {
        "metric": cfg.metric,
        "mode": cfg.mode,
        "max_t": max_t,
        "n_trials": int(len(trials)),
        "n_completed": int((trials["status"] == "completed").sum()),
        "n_stopped": int((trials["status"] == "stopped").sum()),
        "n_errors": int((trials["status"] == "error").sum()),
        "best_trial": str(top["trial_id"]),
        "best_user_stage": best_fields,
        "best_metrics": _metrics_of(top),
        "worst_trial": None if worst is None else str(worst["trial_id"]),
        "worst_user_stage": None if worst is None else trial_user_stage(worst, base),
        "worst_metrics": None if worst is None else _metrics_of(worst),
        "paths": {k: str(v) for k, v in paths.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
    res = SweepOutcome(summary)
    res.trials, res.epochs = trials, epochs
    return res


def _metrics_of(row: pd.Series) -> dict[str, float | None]:
    return {k: (None if pd.isna(v) else float(v)) for k, v in row.items() if str(k).startswith(("val_", "global_val_"))}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def load_sweep_data(run_dir: str | Path, dataset: str, golden: str = "rouge1", mode: str = "rm_train") -> SweepData:
    """The cached features of `dataset`'s `mode` pools (written by `ttp train` / the features job).

    Features of a fine-tuned backbone (`features/tuned`) win over the frozen ones: the user stage of `ttp train`
    reads those.
    """
    from ttp_ray.training.features_job import features_matrix, read_feature_table

    path = features_dir(run_dir, dataset, mode, "tuned")
    if not (path / "_SUCCESS").is_file():
        path = features_dir(run_dir, dataset, mode)
    table = read_feature_table(path, columns=["user_id", "query_id", "cand_idx", golden, "features"])
    return SweepData.from_columns(
        features_matrix(table),
        np.asarray(table[golden].to_numpy(zero_copy_only=False), dtype=np.float64),
        table["user_id"].to_pylist(),
        table["query_id"].to_pylist(),
        table["cand_idx"].to_pylist(),
    )


def _eval_features(run_dir: str | Path, dataset: str, training_cfg: TrainingConfig) -> bool:
    """Make sure the eval pools' features are cached (`ttp train` scores them without caching); False = skip."""
    if (features_dir(run_dir, dataset, "rm_train", "tuned") / "_SUCCESS").is_file():
        log.info("compare_on_eval skipped: the backbone was fine-tuned, and eval features need that backbone")
        return False
    if not any((Path(run_dir) / "candidates" / dataset / "eval").glob("part-*.parquet")):
        log.info("compare_on_eval skipped: no eval candidates for %s", dataset)
        return False
    ensure_features(run_dir, dataset, training_cfg.features, modes=("eval",))
    return True


def run_tune(
    run_dir: str | Path,
    dataset: str,
    cfg: SweepConfig,
    *,
    training_cfg: TrainingConfig | None = None,
    eval_cfg: EvaluationConfig | None = None,
    pipeline_cfg: Any = None,
) -> dict[str, Any]:
    """`ttp tune`: sweep the user-stage head of `dataset` on its cached RM-training features.

    Needs `{run_dir}/rm/{dataset}/features/frozen/rm_train` (from `ttp train`, or `jobs/tune_variance_head.py
    --synthetic`) and a running Ray cluster (entrypoints call `init_ray()`). Writes to `cfg.output_dir` or
    `{run_dir}/tune/{dataset}`: results.csv/.parquet, epochs.parquet, sweep.png, best.yaml, summary.json.

    Args:
        run_dir, dataset: where the features are and the outputs go.
        cfg: the `tuning:` section. training_cfg / eval_cfg / pipeline_cfg: see `run_sweep`.

    Returns:
        The summary dict (also in summary.json).
    """
    data = load_sweep_data(run_dir, dataset, cfg.golden)
    out = Path(cfg.output_dir) if cfg.output_dir else tune_dir(run_dir, dataset)
    os.makedirs(out, exist_ok=True)
    res = dict(run_sweep(data, cfg, out, training_cfg=training_cfg, eval_cfg=eval_cfg, pipeline_cfg=pipeline_cfg))
    if cfg.compare_on_eval and _eval_features(run_dir, dataset, training_cfg or TrainingConfig()):
        _, base, _ = prepare_space(cfg)
        configs = {"default": validate(UserStageConfig, base, source="tuning.user_stage"),
                   "best": validate(UserStageConfig, res["best_user_stage"], source="best trial")}
        table = compare_configs(data, load_sweep_data(run_dir, dataset, cfg.golden, "eval"), configs,
                                global_cfg=(training_cfg or TrainingConfig()).global_stage, eval_cfg=eval_cfg)
        paths = write_compare(table, out)
        res["compare"] = {r["config"]: {k: v for k, v in r.items() if k != "config"} for r in table.to_dict("records")}
        res["paths"].update({k: str(v) for k, v in paths.items()})
        (out / "summary.json").write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
        log.info("default vs best on the eval pools:\n%s", (out / "compare.md").read_text())
    return res
