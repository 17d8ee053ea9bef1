"""SweepConfig validation: one place for metric/mode, named errors for bad schedules and resources."""

from __future__ import annotations

import pytest

from ttp_ray.config import load_config, validate
from ttp_ray.errors import TTPValidationError
from ttp_ray.tuning.config import METRICS, SweepConfig


def test_defaults_and_mode_come_from_the_metric():
    cfg = SweepConfig()
    assert cfg.metric in METRICS and cfg.mode == "max"
    assert cfg.resources_per_trial.as_dict() == {"cpu": 1.0}
    assert validate(SweepConfig, {"metric": "val_bon_max_n"}).mode == "max"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"resources_per_trial": {"cpu": 0, "gpu": 0}}, "must reserve something"),
        ({"asha": {"grace_period": 5, "max_t": 3}}, r"grace_period \(5\) must be <= asha.max_t \(3\)"),
        ({"n_grid": [4, 2]}, "strictly increasing"),
        ({"n_grid": [0, 2]}, "N >= 1"),
        ({"metric": "val_loss"}, "metric"),
        ({"num_samples": 0}, "num_samples"),
        ({"verbose": 7}, "verbose"),
        ({"num_trials": 3}, r"unknown keys: \['num_trials'\]"),
    ],
)
def test_invalid_configs_fail_with_a_named_reason(data, match):
    with pytest.raises(TTPValidationError, match=match):
        validate(SweepConfig, data)


def test_load_from_yaml_with_overrides(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("num_samples: 6\nasha: {grace_period: 1, max_t: 4}\nuser_stage: {batch_size: 64}\n")
    cfg = load_config(SweepConfig, f, ["asha.reduction_factor=2", "resources_per_trial.cpu=0.5"])
    assert cfg.num_samples == 6 and cfg.asha.max_t == 4 and cfg.asha.reduction_factor == 2
    assert cfg.resources_per_trial.as_dict() == {"cpu": 0.5}
    assert cfg.user_stage == {"batch_size": 64}


def test_prepare_space_default_space_and_asha_max_t():
    from ttp_ray.tuning.sweep import prepare_space

    space, base, max_t = prepare_space(SweepConfig())
    assert {"hidden_dim", "variance", "var_floor", "beta_nll", "prior_strength", "lr", "weight_decay"} <= set(space)
    assert max_t == 40 + 1  # largest epochs choice + the final report
    assert base == {"seed": 0}
    _, _, t = prepare_space(SweepConfig(search_space={"lr": 0.01}, user_stage={"epochs": 7}))
    assert t == 8
    assert prepare_space(SweepConfig(asha={"max_t": 5}))[2] == 5


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"search_space": {"val_fraction": {"distribution": "uniform", "low": 0.1, "high": 0.3}}}, "val_fraction"),
        ({"user_stage": {"val_fraction": 0.0}}, "validation split"),
        ({"user_stage": {"epochs": 0}}, "epochs"),
        ({"search_space": {"epochs": 3}, "asha": {"grace_period": 5}}, r"grace_period \(5\) exceeds max_t \(4\)"),
        ({"search_space": {"num_layers": {"distribution": "randint", "low": 0, "high": 9}}}, "num_layers"),
        ({"search_space": {"lr": {"distribution": "uniform", "low": 0.1, "high": 0.2}},
          "points_to_evaluate": [{"batch_size": 64}]}, r"not searched: \['batch_size'\], missing: \['lr'\]"),
        ({"search_space": {"lr": {"distribution": "uniform", "low": 0.1, "high": 0.2}},
          "points_to_evaluate": [{"lr": -1.0}]}, r"points_to_evaluate\[0\]"),
    ],
)
def test_prepare_space_rejects_incomparable_or_invalid_sweeps(data, match):
    from ttp_ray.tuning.sweep import prepare_space

    with pytest.raises(TTPValidationError, match=match):
        prepare_space(SweepConfig.model_validate(data))
