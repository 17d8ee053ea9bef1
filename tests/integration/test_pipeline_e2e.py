"""The demo pipeline end to end on a tiny config: data → generate (hf engine + simulated) → train (Ray Train +
DeepSpeed, all four variants) → score → evaluate → combined report; then a rerun skips every finished stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ttp_ray.pipeline import run_pipeline
from ttp_ray.pipeline_config import load_pipeline_config

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "configs" / "tiny.yaml"
METHODS = {"oracle", "random", "global-det", "global-prob", "user-det", "user-prob"}


@pytest.mark.slow
def test_tiny_pipeline_report_fields_and_ranges(ray_session, tmp_path: Path, monkeypatch) -> None:
    # a relative run_dir, as `make demo` uses (runs/demo): Ray Train and Tune need absolute storage paths
    monkeypatch.chdir(tmp_path.parent)
    cfg = load_pipeline_config(TINY, [f"run_dir={tmp_path.name}"])
    report = run_pipeline(cfg)

    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert set(on_disk["datasets"]) == {"tiny-policy", "tiny-sim"}
    # the claims check is stated for every dataset (whether each holds is up to the data: tiny is noisy)
    assert set(on_disk["claims"]) == {"tiny-policy", "tiny-sim"}
    for claims in on_disk["claims"].values():
        # 6 claims + "User-Prob beats the best training-free selector" (MBR needs only the candidates' texts)
        assert len(claims) == 7 and all(c["passed"] in (True, False, None) and c["detail"] for c in claims)
    assert "## The method's claims on this run" in (tmp_path / "report.md").read_text()
    for name, rep in report["datasets"].items():
        # the training-free selectors sit beside the RMs: MBR always, log-prob where the engine gave log-probs
        free = set(rep["methods"]) - METHODS
        assert set(rep["methods"]) >= METHODS and "mbr" in free, name
        assert free <= {"mbr", "logprob", "logprob-mean"}, name
        if name == "tiny-sim":  # the simulated policy gives no log-probs
            assert free == {"mbr"}
        assert all(rep["methods"][m]["kind"] == "training-free" for m in free)
        g = rep["golden"]
        ns = rep["ns"]
        assert ns == [1, 2, 4]
        oracle, rand = rep["methods"]["oracle"]["bon"][g], rep["methods"]["random"]["bon"][g]
        # exact BoN: all curves start at the pool mean; the oracle is non-decreasing and bounds every RM
        for m, e in rep["methods"].items():
            curve = e["bon"][g]
            assert len(curve) == len(ns) and all(0.0 <= v <= 1.0 for v in curve), (name, m)
            mc = "se" in e  # MBR and pool-aware RMs: Monte Carlo over subsets
            if mc:  # N=1 is a random pick, within its standard error
                assert abs(curve[0] - rand[0]) <= 4 * e["se"][g][0] + 1e-9, (name, m)
            else:
                assert math.isclose(curve[0], rand[0], abs_tol=1e-9), (name, m)
            # a Monte Carlo estimate may sit above the exact oracle by its noise (at N=1 both are the mean)
            tol = [4 * x for x in e["se"][g]] if mc else [0.0] * len(ns)
            assert all(v <= o + t + 1e-9 for v, o, t in zip(curve, oracle, tol, strict=True)), (name, m)
        assert all(b >= a - 1e-12 for a, b in zip(oracle, oracle[1:], strict=False))
        for m in METHODS - {"oracle", "random"}:
            d = rep["methods"][m]["diagnostics"]
            assert 0.0 <= d["alpha"] <= 1.0 and 0.0 <= d["beta"] <= 1.0
        # the eval pools are complete: every (query, cand_idx) candidate has a golden score
    for ds in ("tiny-policy", "tiny-sim"):
        for mode in ("eval", "rm_train"):
            assert any((tmp_path / "candidates" / ds / mode).glob("part-*.parquet")), (ds, mode)
        assert (tmp_path / "scores" / ds / "scores.parquet").is_file()
        for png in ("bon_curves.png",):
            assert any((tmp_path / "eval" / ds).glob("*.png")), png
    # the simulated dataset has a real selection signal: the oracle gains, and a trained RM beats random at N=4
    sim = report["datasets"]["tiny-sim"]
    g = sim["golden"]
    assert sim["methods"]["oracle"]["bon"][g][-1] > sim["methods"]["random"]["bon"][g][-1] + 0.05
    assert max(sim["methods"][m]["bon"][g][-1] for m in METHODS - {"oracle", "random"}) > \
        sim["methods"]["random"]["bon"][g][-1]

    # resumable: a second run finds every stage done and reproduces the same report
    again = run_pipeline(load_pipeline_config(TINY, [f"run_dir={tmp_path.name}"]))
    assert again["summary"] == report["summary"]
