"""jobs/tune_variance_head.py fails fast, before starting Ray, with exit status 2 and a message that says why."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

JOB = Path(__file__).resolve().parents[3] / "jobs" / "tune_variance_head.py"


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("tune_variance_head", JOB)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_missing_features_is_a_clear_error(job, tmp_path, capsys):
    rc = job.main(["--run-dir", str(tmp_path / "run"), "--dataset", "nothing-here"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no cached RM training features" in err and "--synthetic" in err and "nothing-here" in err


def test_synthetic_flag_refuses_a_real_dataset(job, tmp_path, capsys):
    q = tmp_path / "questions.json"
    q.write_text("[]")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"datasets": [{"name": "real", "kind": "lamp", "questions": str(q)}]}))
    rc = job.main(["--config", str(cfg), "--run-dir", str(tmp_path / "run"), "--synthetic"])
    assert rc == 2
    assert "dataset 'real' is kind='lamp'" in capsys.readouterr().err


def test_bad_tuning_section_names_the_key(job, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"tuning": {"num_trials": 4}}))
    assert job.main(["--config", str(cfg)]) == 2
    assert "num_trials" in capsys.readouterr().err
