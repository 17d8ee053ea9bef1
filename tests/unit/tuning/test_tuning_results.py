"""Trial table, per-epoch table, plot and best.yaml from plain records (no Ray)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from ttp_ray.tuning.results import (
    TrialRecord,
    best_user_stage,
    plot_sweep,
    trial_tables,
    write_best_yaml,
    write_tables,
)
from ttp_ray.tuning.space import parse_space

SPACE = parse_space(
    {
        "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-1},
        "variance": {"distribution": "choice", "values": ["softplus", "exp"]},
        "epochs": 4,
    }
)


def _rec(tid: str, lr: float, var: str, curve: list[float], finished: bool = True, error: str | None = None):
    ep = pd.DataFrame(
        {
            "training_iteration": range(1, len(curve) + 1),
            "val_bon_auc": curve,
            "val_alpha": [0.5] * len(curve),
            "val_beta": [0.25] * len(curve),
        }
    )
    return TrialRecord(tid, {"lr": lr, "variance": var, "epochs": 4}, ep, finished and error is None, error)


@pytest.fixture
def records():
    return [
        _rec("a", 1e-3, "softplus", [0.10, 0.12, 0.13, 0.14]),
        _rec("b", 1e-2, "exp", [0.09, 0.08], finished=False),  # stopped after 2 of 4 epochs
        _rec("c", 3e-2, "exp", [0.15, 0.16, 0.15, 0.17]),
        _rec("e", 5e-2, "exp", [0.20, 0.19], finished=False),  # best value, but cut at an early epoch
        _rec("d", 1e-4, "softplus", [], error="boom"),
    ]


def test_trial_table_ranks_and_status(records):
    trials, epochs = trial_tables(records, "val_bon_auc")
    # completed trials first (by metric), then stopped ones, then errors
    assert list(trials["trial_id"]) == ["c", "a", "e", "b", "d"]
    assert list(trials["rank"]) == [1, 2, 3, 4, 5]
    status = dict(zip(trials["trial_id"], trials["status"], strict=True))
    assert status == {"a": "completed", "b": "stopped", "c": "completed", "d": "error", "e": "stopped"}
    assert trials.set_index("trial_id").loc["b", "iterations"] == 2
    assert trials.set_index("trial_id").loc["c", "best_val_bon_auc"] == pytest.approx(0.17)
    assert trials.set_index("trial_id").loc["a", "config/lr"] == pytest.approx(1e-3)
    assert len(epochs) == 4 + 2 + 4 + 2 and set(epochs["trial_id"]) == {"a", "b", "c", "e"}


def test_write_tables_plot_and_best_yaml(records, tmp_path):
    trials, epochs = trial_tables(records, "val_bon_auc")
    paths = write_tables(trials, epochs, tmp_path)
    back = pd.read_parquet(paths["parquet"])
    assert list(back["trial_id"]) == ["c", "a", "e", "b", "d"]
    assert len(pd.read_csv(paths["csv"])) == 5 and len(pd.read_parquet(paths["epochs"])) == 12

    png = plot_sweep(trials, SPACE, "val_bon_auc", tmp_path / "sweep.png")
    assert png.stat().st_size > 5_000 and png.read_bytes()[:4] == b"\x89PNG"

    best = best_user_stage(trials, base={"batch_size": 32})
    assert best == {"batch_size": 32, "lr": pytest.approx(3e-2), "variance": "exp", "epochs": 4}
    out = write_best_yaml(tmp_path / "best.yaml", best, header="best of 4\nmetric val_bon_auc")
    text = out.read_text()
    assert text.startswith("# best of 4\n# metric val_bon_auc\n")
    tree = yaml.safe_load(text)
    assert tree == {"training": {"user_stage": {"batch_size": 32, "lr": 3e-2, "variance": "exp", "epochs": 4}}}
    assert type(tree["training"]["user_stage"]["epochs"]) is int


def test_best_needs_a_ranked_trial():
    trials, _ = trial_tables([_rec("d", 1e-4, "softplus", [], error="boom")], "val_bon_auc")
    with pytest.raises(ValueError, match="no trial reported"):
        best_user_stage(trials.drop(columns=["rank"], errors="ignore"))
