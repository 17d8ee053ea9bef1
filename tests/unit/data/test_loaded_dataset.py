"""`LoadedDataset` round trip, `load_dataset` dispatch and the `run_load` entry point."""

from __future__ import annotations

import json
from pathlib import Path

from ttp_ray.data.config import DatasetConfig, SyntheticConfig
from ttp_ray.data.dataset import LoadedDataset
from ttp_ray.data.loaders import load_dataset, run_load

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"
SMALL = SyntheticConfig(n_users=4, profile_size=6, queries_per_user=2)


def test_write_read_round_trip(tmp_path: Path) -> None:
    cfg = DatasetConfig(name="lamp4", kind="lamp", questions=FIXTURES / "lamp4_small" / "questions.json",
                        outputs=FIXTURES / "lamp4_small" / "outputs.json")
    ds = load_dataset(cfg, tmp_path)
    ds.write(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "errors.parquet", "profile.parquet", "queries.parquet", "summary.json", "users.parquet"]
    back = LoadedDataset.read(tmp_path / "out")
    assert (back.name, back.task) == ("lamp4", "LaMP_4")
    for key in ("users", "profile", "queries", "errors"):
        assert getattr(back, key).equals(getattr(ds, key)), key
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_queries"] == 3
    assert ds.references()[("q:111", "111")] == "Zürich cafés cash in on festival crowds"
    assert ds.references("rm_train")[("q:110", "1101")] == "Library saved by residents' vote"


def test_run_load_synthetic_prints_counts(tmp_path: Path, capsys) -> None:
    cfg = DatasetConfig(name="syn", synthetic=SMALL, max_profile_items=4)
    ds = run_load(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "users: 4  profile items: 16  queries: 8 (8 with a reference)" in out
    assert "errors (skipped records): 0" in out
    assert (tmp_path / "source" / "questions.json").is_file() and (tmp_path / "config.resolved.yaml").is_file()
    assert ds.task == "synthetic_headline" and ds.users["dataset"].to_pylist() == ["syn"] * 4


def test_run_load_points_at_the_errors_table(tmp_path: Path, capsys) -> None:
    q = tmp_path / "q.json"
    q.write_text(json.dumps([{"id": "1", "input": "Generate a headline for the following article: x",
                              "profile": "oops"},
                             {"id": "2", "input": "Generate a headline for the following article: y", "profile": []}]))
    ds = run_load(DatasetConfig(name="bad", kind="lamp", questions=q, max_error_rate=0.5), tmp_path / "run")
    assert ds.errors.num_rows == 1
    assert f"errors (skipped records): 1 -> see {tmp_path / 'run' / 'errors.parquet'}" in capsys.readouterr().out
