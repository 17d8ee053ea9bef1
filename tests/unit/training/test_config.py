"""TrainingConfig validation and the job's `training:` section loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ttp_ray.errors import TTPValidationError
from ttp_ray.training.config import TrainingConfig

JOB = Path(__file__).resolve().parents[3] / "jobs" / "train_reward_models.py"


def _job():
    spec = importlib.util.spec_from_file_location("train_reward_models", JOB)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_defaults_are_the_four_variants_on_rouge1() -> None:
    cfg = TrainingConfig()
    assert cfg.variants == ["global-det", "global-prob", "user-det", "user-prob"] and cfg.golden == "rouge1"
    assert cfg.user_stage.head_config(probabilistic=False).probabilistic is False


def test_job_reads_training_section_and_overrides(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("training:\n  golden: rougeL\n  global_stage: {zero_stage: 0}\nother: {ignored: 1}\n")
    cfg = _job().load_training_config(str(path), ["user_stage.prior_strength=10", "training.variants=[user-prob]"])
    assert cfg.golden == "rougeL" and cfg.global_stage.zero_stage == 0
    assert cfg.user_stage.prior_strength == 10 and cfg.variants == ["user-prob"]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("user_stage.lr_typo=1", "unknown keys"),
        ("global_stage.zero_stage=4", "zero_stage"),
        ("variants=[user-prob,user-prob]", "must not repeat"),
        ("variants=[best]", "variants"),
        ("user_stage.var_floor=0", "var_floor"),
    ],
)
def test_bad_settings_fail_with_the_parameter_named(override: str, match: str) -> None:
    with pytest.raises(TTPValidationError, match=match):
        _job().load_training_config(None, [override])


def test_job_exit_code_2_on_missing_inputs(tmp_path, capsys) -> None:
    rc = _job().main(["--run-dir", str(tmp_path), "--dataset", "nope", "training.user_stage.lr_typo=1"])
    assert rc == 2 and "unknown keys" in capsys.readouterr().err
