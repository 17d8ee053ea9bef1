"""A real Ray Tune sweep (Optuna + ASHA) on the synthetic benchmark with simulated pools, via the job's main().

Checks: ASHA cut at least one trial short, the outputs exist and agree, best.yaml loads as the pipeline config
`ttp train` reads, and the best configuration re-trained through the training API reproduces its sweep score
and beats the worst trial.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ttp_ray.config import read_yaml
from ttp_ray.pipeline_config import load_pipeline_config
from ttp_ray.tuning.objective import train_and_score
from ttp_ray.tuning.sweep import load_sweep_data

JOB = Path(__file__).resolve().parents[2] / "jobs" / "tune_variance_head.py"

SPACE = {
    "lr": {"distribution": "loguniform", "low": 1.0e-3, "high": 3.0e-1},
    "prior_strength": {"distribution": "loguniform", "low": 1.0e-2, "high": 1.0e2},
    "variance": {"distribution": "choice", "values": ["softplus", "exp"]},
    "beta_nll": {"distribution": "uniform", "low": 0.0, "high": 1.0},
    "hidden_dim": {"distribution": "choice", "values": [16, 32]},
    "num_layers": {"distribution": "randint", "low": 0, "high": 1},  # 0 (linear head) collapses users
}


@pytest.mark.slow
def test_sweep_stops_early_and_best_config_retrains(ray_session, tmp_path):
    spec = importlib.util.spec_from_file_location("tune_variance_head", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)

    run_dir = tmp_path / "run"
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "datasets": [{"name": "synth", "kind": "synthetic", "candidates": "simulated",
                      "synthetic": {"n_users": 8, "profile_size": 10, "queries_per_user": 2}}],
        "generation": {"n_candidates": 6, "rm_train": {"items_per_user": 6, "candidates_per_item": 6}},
        "training": {"global_stage": {"epochs": 6}, "features": {"max_query_tokens": 32}},
        "tuning": {"num_samples": 6, "max_concurrent_trials": 3, "seed": 0, "verbose": 0,
                   "compare_on_eval": False,  # covered by the unit tests; keeps this test inside its budget
                   "asha": {"grace_period": 1, "reduction_factor": 2},
                   "user_stage": {"epochs": 5, "patience": 50, "val_fraction": 0.25},
                   "search_space": SPACE,
                   # tried first: a linear head, a weak prior and a huge step (it overshoots, α and β rise)
                   "points_to_evaluate": [{"num_layers": 0, "prior_strength": 0.01, "lr": 0.2, "variance": "exp",
                                           "beta_nll": 1.0, "hidden_dim": 16}]},
    }))
    rc = job.main(["--config", str(cfg_file), "--run-dir", str(run_dir), "--dataset", "synth", "--synthetic"])
    assert rc == 0

    out = run_dir / "tune" / "synth"
    summary = json.loads((out / "summary.json").read_text())
    trials = pd.read_parquet(out / "results.parquet")
    csv = pd.read_csv(out / "results.csv")
    epochs = pd.read_parquet(out / "epochs.parquet")
    assert len(trials) == len(csv) == 6 and summary["n_errors"] == 0
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"

    # ASHA: max_t = 5 epochs + the final report; at least one trial stopped before it.
    assert summary["max_t"] == 6
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 1 and (stopped["iterations"] < summary["max_t"]).all()
    completed = trials[trials["status"] == "completed"]
    assert len(completed) >= 1
    assert (epochs.groupby("trial_id")["final"].max()[completed["trial_id"]] == 1).all()
    for col in ("val_bon_auc", "val_bon_max_n", "val_alpha", "val_beta", "val_bon_n1", "val_bon_n6"):
        assert trials[col].notna().all(), col
    assert ((trials["val_alpha"] >= 0) & (trials["val_alpha"] <= 1)).all()
    assert (trials["val_bon_max_n"] <= trials["val_oracle_max_n"] + 1e-9).all()
    assert list(trials["rank"]) == list(range(1, 7))
    anchor = trials[(trials["config/num_layers"] == 0) & (trials["config/lr"] == 0.2)]
    assert len(anchor) == 1 and anchor["config/variance"].item() == "exp"  # points_to_evaluate ran
    # completed trials rank first; within each status, by the metric
    assert trials["status"].map({"completed": 0, "stopped": 1}).is_monotonic_increasing
    for _, group in trials.groupby("status"):
        assert group["val_bon_auc"].is_monotonic_decreasing
    assert trials.iloc[0]["status"] == "completed"

    # best.yaml is the pipeline config `ttp train --config best.yaml` reads, with the winning user stage.
    best_cfg = load_pipeline_config(out / "best.yaml")
    us = best_cfg.training.user_stage
    top = trials.iloc[0]
    assert us.lr == pytest.approx(top["config/lr"]) and us.variance == top["config/variance"]
    assert us.hidden_dim == top["config/hidden_dim"] and us.epochs == 5 and us.val_fraction == 0.25
    assert best_cfg.training.global_stage.epochs == 6
    assert read_yaml(out / "best.yaml")["training"]["user_stage"]["seed"] == 0

    # Re-train the best configuration through the training API: same score as in the sweep, above the worst.
    data = load_sweep_data(run_dir, "synth")
    again = train_and_score(data, us, global_cfg=best_cfg.training.global_stage).final
    assert again["val_bon_auc"] == pytest.approx(top["val_bon_auc"], abs=0.01)
    worst = trials.loc[trials["val_bon_auc"].idxmin()]
    assert summary["worst_trial"] == worst["trial_id"]
    assert again["val_bon_auc"] > worst["val_bon_auc"]
    assert summary["best_metrics"]["val_bon_auc"] == pytest.approx(top["val_bon_auc"])
