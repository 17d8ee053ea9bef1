"""Sizing model: the formulas of docs/scaling.md, the presets' provenance, rendering and input validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttp_ray.errors import TTPValidationError
from ttp_ray.planning import Plan, Throughputs, plan, render_plan, run_plan


def test_paper_figures_are_the_defaults() -> None:
    tp = Throughputs.paper()
    assert (tp.generation_s_per_response, tp.rm_train_s_per_sample, tp.scoring_s_per_candidate) == (1.498, 0.019, 0.0023)
    assert tp.device == "GPU"
    # The paper's own consistency checks: 30 candidates score in 69 ms, generation is ~650x scoring.
    assert 30 * tp.scoring_s_per_candidate == pytest.approx(0.069)
    assert tp.generation_s_per_response / tp.scoring_s_per_candidate == pytest.approx(651.3, abs=0.1)
    assert all(tp.sources[k] for k in ("generation_s_per_response", "rm_train_s_per_sample", "scoring_s_per_candidate"))
    assert plan(10, 1, 1).throughputs == tp


def test_worked_example_1k_users_8_gpus() -> None:
    p = plan(users=1000, queries_per_user=3, n_candidates=30, rm_train_items_per_user=10, rm_train_candidates=8, gpus=8)
    gen, train, score = p.stages
    assert [s.name for s in p.stages] == ["generation", "rm_training", "scoring"]
    assert gen.items == 1000 * 3 * 30 + 1000 * 10 * 8 == 170_000
    assert gen.device_hours == pytest.approx(170_000 * 1.498 / 3600)  # 70.74
    assert gen.wall_hours == pytest.approx(gen.device_hours / 8)
    assert train.items == 80_000 and train.passes == 4
    assert train.device_hours == pytest.approx(80_000 * 0.019 * 4 / 3600)
    assert score.items == 90_000
    assert score.device_hours == pytest.approx(90_000 * 0.0023 * 4 / 3600)
    assert p.total_device_hours == pytest.approx(gen.device_hours + train.device_hours + score.device_hours)
    assert p.total_wall_hours == pytest.approx(p.total_device_hours / 8)
    assert p.bottleneck == "generation"


def test_linear_in_users_and_inverse_in_gpus() -> None:
    a = plan(1_000, 3, 30, gpus=8)
    b = plan(10_000, 3, 30, gpus=8)
    c = plan(10_000, 3, 30, gpus=80)
    assert b.total_device_hours == pytest.approx(10 * a.total_device_hours)
    assert c.total_device_hours == pytest.approx(b.total_device_hours)
    assert c.total_wall_hours == pytest.approx(b.total_wall_hours / 10)


def test_epochs_and_no_rm_training() -> None:
    one = plan(100, 2, 16, 10, 8, 1)
    three = plan(100, 2, 16, 10, 8, 1, rm_epochs=3)
    assert three.stage("rm_training").device_hours == pytest.approx(3 * one.stage("rm_training").device_hours)
    assert three.stage("generation") == one.stage("generation")
    none = plan(100, 2, 16, rm_train_items_per_user=0, gpus=1)
    assert none.stage("rm_training").items == 0 and none.stage("rm_training").device_hours == 0.0
    assert none.stage("generation").items == 100 * 2 * 16


def test_cpu_preset_reproduces_the_measured_calibration_run() -> None:
    # measured-here.md: 8 users x (3 queries x 16 + 10 items x 8) candidates = 1024 in 800 s on one 2-core box.
    p = plan(8, 3, 16, 10, 8, 1, Throughputs.cpu_2core())
    gen = p.stage("generation")
    assert gen.items == 1024
    assert gen.device_hours * 3600 == pytest.approx(800.0)
    assert gen.wall_hours * 3600 == pytest.approx(800.0 + 55.0)  # plus the measured engine start
    assert p.stage("scoring").device_hours * 3600 == pytest.approx(384 / 60)
    assert p.throughputs.rm_train_passes == p.throughputs.scoring_passes == 1
    decode_only = Throughputs.cpu_2core(tokens_per_response=20)
    assert decode_only.generation_s_per_response == pytest.approx(0.4)  # 20 tokens at 50 tokens/s


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"users": 0}, "users"),
        ({"queries_per_user": -1}, "queries_per_user"),
        ({"n_candidates": 0}, "n_candidates"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": 1.5}, "gpus"),
        ({"rm_train_items_per_user": -1}, "rm_train_items_per_user"),
        ({"rm_train_candidates": 0}, "rm_train_candidates"),
        ({"rm_epochs": 0}, "rm_epochs"),
        ({"users": True}, "users"),
    ],
)
def test_invalid_counts_name_the_parameter(kwargs: dict, parameter: str) -> None:
    args = {"users": 10, "queries_per_user": 1, "n_candidates": 4, "gpus": 1, **kwargs}
    with pytest.raises(TTPValidationError, match=f"`{parameter}` must be an integer >= ") as e:
        plan(**args)
    assert e.value.parameter == parameter


def test_invalid_throughputs() -> None:
    with pytest.raises(TTPValidationError, match="`scoring_s_per_candidate` must be a positive number"):
        Throughputs("x", "GPU", 1.0, 0.1, 0.0)
    with pytest.raises(TTPValidationError, match="`rm_train_passes` must be an integer >= 1"):
        Throughputs("x", "GPU", 1.0, 0.1, 0.1, rm_train_passes=0)
    with pytest.raises(TTPValidationError, match="`tokens_per_response` must be >= 1"):
        Throughputs.cpu_2core(tokens_per_response=0)


def test_render_plan_lists_stages_totals_and_sources() -> None:
    text = render_plan(plan(10_000, 3, 30, gpus=64))
    assert "10,000 users x 3 queries x N=30" in text
    assert "| generation | 1,700,000 responses | 1.50 s | 1 | 707.4 |" in text
    assert "| **total** |" in text and "Bottleneck: generation" in text
    assert "paper §9: 1498 ms/response" in text
    assert "GPU-hours" in text


def test_run_plan_prints_and_returns(capsys: pytest.CaptureFixture[str]) -> None:
    p = run_plan(users=100, queries=2, n=30, gpus=4)
    assert isinstance(p, Plan) and p.gpus == 4 and p.n_candidates == 30
    assert capsys.readouterr().out.strip() == render_plan(p)
    quiet = run_plan(100, 2, 30, 4, preset="cpu-2core", echo=False)
    assert quiet.throughputs.name == "cpu-2core" and capsys.readouterr().out == ""


def test_run_plan_overrides_and_errors() -> None:
    p = run_plan(100, 2, 30, 4, overrides={"generation_s_per_response": 0.5}, echo=False)
    assert p.throughputs.generation_s_per_response == 0.5
    assert p.throughputs.sources["generation_s_per_response"] == "user override: 0.5"
    assert p.throughputs.rm_train_s_per_sample == 0.019
    with pytest.raises(TTPValidationError, match="unknown throughput preset 'tpu'"):
        run_plan(1, 1, 1, 1, preset="tpu", echo=False)
    with pytest.raises(TTPValidationError, match=r"unknown throughput fields \['speed'\]"):
        run_plan(1, 1, 1, 1, overrides={"speed": 2.0}, echo=False)


def test_to_dict_is_json_ready() -> None:
    d = json.loads(json.dumps(plan(1000, 3, 30, gpus=8).to_dict()))
    assert d["bottleneck"] == "generation"
    assert d["stages"][0]["name"] == "generation" and d["throughputs"]["name"] == "paper"
    assert d["total_device_hours"] == pytest.approx(sum(s["device_hours"] for s in d["stages"]))


def test_docs_worked_table_matches_the_model() -> None:
    """docs/scaling.md's paper table was produced by `plan`; keep it that way."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    section = doc.split("## Worked table", 1)[1].split("CPU preset", 1)[0]
    rows = [r.strip("|").split("|") for r in section.splitlines() if r.startswith("| 1")]
    assert len(rows) == 6, rows
    for cells in rows:
        users, gpus, responses, gen, train, score, total = (c.strip().replace(",", "") for c in cells[:7])
        p = plan(int(users), 3, 30, 10, 8, int(gpus))
        assert p.stage("generation").items == int(responses)
        for stage, value in (("generation", gen), ("rm_training", train), ("scoring", score)):
            assert p.stage(stage).device_hours == pytest.approx(float(value), rel=0.02), (users, gpus, stage)
        assert p.total_device_hours == pytest.approx(float(total), rel=0.01)
