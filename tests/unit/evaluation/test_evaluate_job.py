"""run_evaluate and jobs/evaluate.py end to end (in-process path), plots included; lazy `ray` import."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.job import run_evaluate, use_ray_path
from ttp_ray.evaluation.pools_io import pools_to_tables
from ttp_ray.evaluation.theory import PlantedRM, simulate_pools

REPO = Path(__file__).resolve().parents[3]
RMS = {"global-det": PlantedRM(0.3, 0.4, 0.4, 0.3), "user-det": PlantedRM(0.4, 0.5, 0.3, 0.2),
       "user-prob": PlantedRM(0.7, 0.4, 0.1, 0.1)}


@pytest.fixture(scope="module")
def parquet_inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval_inputs")
    pools = simulate_pools(RMS, n_users=24, queries_per_user=3, pool_size=10, clip01=True, seed=2)
    cands, scores = pools_to_tables(pools)
    cdir = root / "candidates"
    cdir.mkdir()
    half = cands.num_rows // 2
    pq.write_table(cands.slice(0, half), cdir / "part-00000.parquet")
    pq.write_table(cands.slice(half), cdir / "part-00001.parquet")
    pq.write_table(cands.slice(0, 0).select(["user_id"]), cdir / "errors.parquet")  # other schema: skipped
    pq.write_table(scores, root / "scores.parquet")
    return cdir, root / "scores.parquet"


def test_run_evaluate_writes_report_and_plots(parquet_inputs, tmp_path) -> None:
    cdir, spath = parquet_inputs
    report = run_evaluate(cdir, spath, tmp_path, EvaluationConfig(mc_repeats=1), "sim")
    assert report["data"]["engine"] == "in-process" and report["data"]["candidates"] == 24 * 3 * 10
    assert set(report["plots"]) == {"bon_curves", "rho_u_hist", "rho_q_scatter", "collapsed_user"}
    for name in ("report.json", "report.md", "config.resolved.yaml", *(f"{p}.png" for p in report["plots"])):
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["methods"]["user-prob"]["bon"] == report["methods"]["user-prob"]["bon"]


def _load_job_main():
    spec = importlib.util.spec_from_file_location("jobs_evaluate", REPO / "jobs" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_job_cli_config_overrides_and_errors(parquet_inputs, tmp_path, capsys, caplog) -> None:
    main = _load_job_main()
    cdir, spath = parquet_inputs
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("evaluation:\n  ns: [1, 2, 4]\n  plots: false\n")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        rc = main(["--config", str(cfg), "--candidates", str(cdir), "--scores", str(spath), "--out", str(out),
                   "--dataset", "sim", "evaluation.golden=rougeL", "mc_repeats=1"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["golden"] == "rougeL" and rep["ns"] == [1, 2, 4] and rep["plots"] == {}
    assert "golden: rougeL" in caplog.text  # the resolved config is logged
    assert main(["--candidates", str(tmp_path / "nope"), "--scores", str(spath), "--out", str(out)]) == 2
    assert "candidates path does not exist" in capsys.readouterr().err
    cfg.write_text("evaluation:\n  nss: [1]\n")
    assert main(["--config", str(cfg), "--candidates", str(cdir), "--scores", str(spath), "--out", str(out)]) == 2
    assert "unknown keys: ['nss']" in capsys.readouterr().err


def test_import_keeps_ray_out() -> None:
    code = "import sys, ttp_ray.evaluation; sys.exit(int('ray' in sys.modules or 'matplotlib' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO))).returncode == 0


def test_engine_choice() -> None:
    cfg = EvaluationConfig(ray_min_candidates=1000)
    assert not use_ray_path(999, cfg) and use_ray_path(1000, cfg)
    assert use_ray_path(10, cfg, use_ray=True) and not use_ray_path(10**9, cfg, use_ray=False)
