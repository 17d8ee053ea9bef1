"""build_report / write_report / render_table / merge_reports on simulated CANDIDATES + SCORES tables."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ttp_ray.config import validate
from ttp_ray.errors import DataError, TTPValidationError
from ttp_ray.evaluation import bon
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.pools_io import pools_from_tables, pools_to_tables
from ttp_ray.evaluation.render import render_table
from ttp_ray.evaluation.report import build_report, merge_reports, write_report
from ttp_ray.evaluation.theory import PlantedRM, simulate_pools

RMS = {"user-det": PlantedRM(0.4, 0.5, 0.3, 0.2), "user-prob": PlantedRM(0.7, 0.4, 0.1, 0.1)}
CFG = EvaluationConfig(plots=False, mc_repeats=2)


@pytest.fixture(scope="module")
def tables() -> tuple[pa.Table, pa.Table, bon.Pools]:
    pools = simulate_pools(RMS, n_users=30, queries_per_user=3, pool_size=12, clip01=True, seed=1)
    cands, scores = pools_to_tables(pools)
    return cands, scores, pools


@pytest.fixture(scope="module")
def report(tables) -> dict:
    return build_report(tables[0], tables[1], CFG, dataset="sim")


def test_report_numbers_are_the_exact_curves(report, tables) -> None:
    pools = tables[2]
    assert report["ns"] == [1, 2, 4, 8, 12]  # 16 and 30 clipped to the pool size 12
    g = pools.golden["rouge1"]
    for m in ("user-det", "user-prob"):
        want = bon.exact_bon(g, pools.scores[m], pools.offsets, report["ns"]).mean(0)
        np.testing.assert_allclose(report["methods"][m]["bon"]["rouge1"], want, rtol=1e-12)
    oracle = report["methods"]["oracle"]["bon"]["rouge1"]
    np.testing.assert_allclose(oracle, bon.exact_bon(g, None, pools.offsets, report["ns"]).mean(0))
    rand = report["methods"]["random"]["bon"]["rougeL"]
    assert rand == pytest.approx([pools.golden["rougeL"].mean()] * 5)
    prob, det = report["methods"]["user-prob"], report["methods"]["user-det"]
    assert prob["bon"]["rouge1"][-1] > det["bon"]["rouge1"][-1] > rand[0]
    assert prob["diagnostics"]["alpha"] < det["diagnostics"]["alpha"]
    assert 0 < prob["oracle_gain_captured"] < 1


def test_report_sections_and_json(report) -> None:
    e = report["methods"]["user-prob"]
    assert set(e["law"]) == {"paper", "per_query"}
    assert e["law"]["per_query"]["r2"] > 0.8
    assert len(e["law"]["paper"]["curve"]) == len(report["ns"])
    assert e["montecarlo"]["max_abs_diff_vs_exact"] < 0.05
    th = report["theory"]
    assert th["c_n_finite_pool"]["max_abs_error"] < th["sqrt_2_ln_n"]["max_abs_error"]
    alloc = report["allocation"]["methods"]["user-prob"]
    assert [r["budget"] for r in alloc] == [2, 4, 8]
    assert all(r["mean_n_allocated"] <= r["budget"] + 1e-9 for r in alloc)
    public = {k: v for k, v in report.items() if k != "_plot_data"}
    json.dumps(public, allow_nan=False)  # no NaN, no numpy types


def test_user_aggregate_differs_with_unequal_query_counts(tables) -> None:
    cands, scores, _ = tables
    drop = pc.invert(pc.and_(pc.equal(cands["user_id"], "u00000"), pc.not_equal(cands["query_id"], "q000000")))
    cands = cands.filter(drop)  # user u00000 keeps one query; its scores for dropped queries are ignored
    rep = build_report(cands, scores, CFG.model_copy(update={"aggregate": "user"}), dataset="sim")
    e = rep["methods"]["user-prob"]
    assert e["bon"]["rouge1"] == e["bon_user_mean"]["rouge1"] != e["bon_query_mean"]["rouge1"]
    assert rep["data"]["ignored_score_rows"] == 2 * 2 * 12


def test_render_and_merge(report) -> None:
    text = render_table(report)
    for token in ("oracle", "random", "user-det", "user-prob", "R1@1", "RL@12", "alpha", "law R2"):
        assert token in text
    other = dict(report, dataset="sim2")
    merged = merge_reports([report, other])
    assert set(merged["datasets"]) == {"sim", "sim2"}
    assert merged["summary"]["user-prob"]["sim"]["at_n_max"] == report["methods"]["user-prob"]["bon"]["rouge1"][-1]
    assert render_table(merged).count("dataset:") == 2
    with pytest.raises(ValueError, match="two reports"):
        merge_reports([report, report])


def test_write_report_from_json_only_draws_the_curves(report, tmp_path) -> None:
    public = json.loads(json.dumps({k: v for k, v in report.items() if k != "_plot_data"}))
    public["config"]["plots"] = True
    written = write_report(public, tmp_path)
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()
    assert set(json.loads((tmp_path / "report.json").read_text())["plots"]) == {"bon_curves"}
    assert written["bon_curves"].stat().st_size > 10_000
    md = (tmp_path / "report.md").read_text()
    assert "## Diagnostics and the scaling law" in md and "![bon_curves](bon_curves.png)" in md


# ------------------------------------------------------------------------------------ input checks
def _set(table: pa.Table, name: str, values) -> pa.Table:
    field = table.schema.field(name)
    return table.set_column(table.column_names.index(name), field, pa.array(values, type=field.type))


def test_missing_duplicate_nonfinite_and_reserved_scores(tables) -> None:
    cands, scores, _ = tables
    with pytest.raises(DataError, match="no score for 1 candidate") as e:
        pools_from_tables(cands, scores.slice(1))
    assert e.value.field == "mu" and e.value.record_id.endswith("/0")
    with pytest.raises(DataError, match="duplicate score rows"):
        pools_from_tables(cands, pa.concat_tables([scores, scores.slice(0, 1)]))
    mu = scores["mu"].to_numpy().copy()
    mu[5] = np.nan
    with pytest.raises(DataError, match="non-finite mu"):
        pools_from_tables(cands, _set(scores, "mu", mu))
    with pytest.raises(DataError, match="reserved"):
        pools_from_tables(cands, _set(scores, "method", ["oracle"] * scores.num_rows))
    ci = scores["cand_idx"].to_numpy().copy()
    ci[0] = 99
    with pytest.raises(DataError, match="not in the candidates table"):
        pools_from_tables(cands, _set(scores, "cand_idx", ci))
    with pytest.raises(DataError, match="missing columns"):
        pools_from_tables(cands.drop_columns(["cand_idx"]), scores)


def test_duplicate_candidates_mode_filter_and_null_golden(tables) -> None:
    cands, scores, pools = tables
    with pytest.raises(DataError, match="duplicate candidate key"):
        pools_from_tables(pa.concat_tables([cands, cands.slice(3, 1)]), scores)
    train = _set(cands, "mode", ["rm_train"] * cands.num_rows)
    got, info = pools_from_tables(pa.concat_tables([cands, _set(train, "query_id", ["t"] * cands.num_rows)]), scores)
    assert got.n_candidates == pools.n_candidates and info["ignored_non_eval_rows"] == cands.num_rows
    r1 = cands["rouge1"].to_pylist()
    r1[0] = None  # first query has no reference: skipped and counted
    got, info = pools_from_tables(_set(cands, "rouge1", r1), scores)
    assert info["skipped_queries_null_golden"] == 1 and got.n_queries == pools.n_queries - 1
    with pytest.raises(DataError, match="mode == 'eval'"):
        pools_from_tables(train, scores)


def test_config_validation() -> None:
    with pytest.raises(TTPValidationError, match="unknown keys"):
        validate(EvaluationConfig, {"ns": [1, 2], "n_candidates": 3})
    with pytest.raises(TTPValidationError, match=">= 1"):
        validate(EvaluationConfig, {"ns": [0, 2]})
    with pytest.raises(TTPValidationError, match="two different methods"):
        validate(EvaluationConfig, {"scatter_methods": ["a", "a"]})
    cfg = validate(EvaluationConfig, {"ns": [8, 1, 8], "allocation": {"budgets": [4, 2]}})
    assert cfg.ns == [1, 8] and cfg.allocation.budgets == [2, 4]
