"""`DatasetConfig` / `SyntheticConfig`: defaults, required fields per kind, paths that must exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttp_ray.config import load_config, validate
from ttp_ray.data.config import DatasetConfig, SyntheticConfig
from ttp_ray.errors import TTPValidationError


def test_defaults_are_the_synthetic_benchmark() -> None:
    cfg = load_config(DatasetConfig)
    assert cfg.kind == "synthetic" and cfg.synthetic.n_users == 24 and cfg.strict is False


def test_lamp_needs_questions_and_missing_files_are_named_at_load(tmp_path: Path) -> None:
    from ttp_ray.data.loaders import load_dataset
    from ttp_ray.errors import DataError

    with pytest.raises(TTPValidationError, match="`questions` is required when kind='lamp'"):
        validate(DatasetConfig, {"kind": "lamp"})
    # Parsing never touches the filesystem (a cluster config validates on a laptop); loading names the field.
    cfg = validate(DatasetConfig, {"kind": "lamp", "questions": str(tmp_path / "nope.json")})
    assert cfg.missing_files() == [f"`questions` file not found: {tmp_path / 'nope.json'}"]
    with pytest.raises(DataError, match=r"field 'questions'.*`questions` file not found: .*nope\.json"):
        load_dataset(cfg, tmp_path)
    q = tmp_path / "q.json"
    q.write_text("[]")
    cfg = validate(DatasetConfig, {"kind": "lamp", "questions": str(q), "outputs": str(tmp_path / "o.json")})
    with pytest.raises(DataError, match=r"`outputs` file not found"):
        load_dataset(cfg, tmp_path)


def test_longlamp_needs_path_and_task(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    with pytest.raises(TTPValidationError, match="`path` and `longlamp_task` are required"):
        validate(DatasetConfig, {"kind": "longlamp", "path": str(rows)})
    cfg = validate(DatasetConfig, {"kind": "longlamp", "path": str(rows), "longlamp_task": "review"})
    assert cfg.path == rows


def test_unknown_keys_and_bad_knobs() -> None:
    with pytest.raises(TTPValidationError, match=r"unknown keys: \['synthetic.n_user'\]"):
        load_config(DatasetConfig, overrides=["synthetic.n_user=3"])
    with pytest.raises(TTPValidationError, match="collapse_frac: Input should be less than or equal to 1"):
        validate(SyntheticConfig, {"collapse_frac": 1.5})
    with pytest.raises(TTPValidationError, match=r"`article_words` min must be >= 30"):
        validate(SyntheticConfig, {"article_words": [10, 20]})
    with pytest.raises(TTPValidationError, match=r"1 <= min <= max"):
        validate(SyntheticConfig, {"headline_words": [5, 3]})
    assert load_config(SyntheticConfig, overrides=["seed=3", "hack_frac=0"]).seed == 3
