"""The data stage and the simulated pools rerun when a setting that shapes their output changes, and only then
(real stage functions on the tiny config's simulated dataset; no Ray needed for these two stages)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ttp_ray.pipeline import _write_simulated, stage_data
from ttp_ray.pipeline_config import load_pipeline_config

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "tiny.yaml"


def _run(run_dir: Path, *overrides: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, bytes]]:
    """data + simulated pools for `tiny-sim`; the terminal lines and each output file's bytes."""
    cfg = load_pipeline_config(TINY, [f"run_dir={run_dir}", *overrides])
    d = cfg.dataset("tiny-sim")
    capsys.readouterr()
    stage_data(cfg, d)
    for mode in ("rm_train", "eval"):
        _write_simulated(cfg, d, mode)
    files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*.parquet"))}
    return capsys.readouterr().out, files


def test_unchanged_settings_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first = _run(tmp_path, capsys=capsys)
    out, again = _run(tmp_path, capsys=capsys)
    assert out.count("done already, skipping") == 3 and again == first


def test_a_data_setting_reruns_data_and_the_pools_built_from_it(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, first = _run(tmp_path, capsys=capsys)
    out, second = _run(tmp_path, "datasets.1.synthetic.seed=4", capsys=capsys)
    assert "data/tiny-sim: settings changed since the last run (synthetic), rerunning" in out
    assert second["data/tiny-sim/queries.parquet"] != first["data/tiny-sim/queries.parquet"]
    assert "done already" not in out  # the pools depend on the data: both modes rerun
    assert set(second) != set(first)  # new pool parts under new names; the old ones are gone
    assert len([k for k in second if k.startswith("candidates/tiny-sim/eval/part-")]) == 1


def test_a_generation_setting_reruns_only_the_pools_it_shapes(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, first = _run(tmp_path, capsys=capsys)
    out, second = _run(tmp_path, "generation.n_candidates=3", "evaluation.ns=[1,2,3]", capsys=capsys)
    assert "data/tiny-sim: done already, skipping" in out
    assert "candidates/tiny-sim/rm_train: done already, skipping" in out
    assert "candidates/tiny-sim/eval: settings changed since the last run (n), rerunning" in out
    eval_part = next(k for k in second if k.startswith("candidates/tiny-sim/eval/part-"))
    assert eval_part not in first
    assert pq.read_metadata(tmp_path / eval_part).num_rows == 3 * 16 * 2  # 3 candidates, 16 users x 2 queries


def test_a_simulated_policy_setting_reruns_both_pools(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path, capsys=capsys)
    out, _ = _run(tmp_path, "datasets.1.simulated.quality_spread=0.5", capsys=capsys)
    assert out.count("settings changed since the last run (simulated), rerunning") == 2
    assert "data/tiny-sim: done already, skipping" in out
