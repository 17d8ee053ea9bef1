"""RM seed spread: the summary statistics and the shared-pool layout (no Ray)."""

from __future__ import annotations

import math

import pytest

from ttp_ray.evaluation.seeds import (
    gen_run_dir,
    link_shared,
    render_seed_table,
    summarize_seeds,
    summarize_spread,
)


def _report(user_prob: float, gain: float) -> dict:
    return {"summary": {
        "oracle": {"c": {"at_n1": 0.1, "at_n_max": 0.3}},
        "user-prob": {"c": {"at_n1": 0.1, "at_n_max": user_prob, "oracle_gain_captured": gain, "alpha": 0.25,
                            "beta": 0.5, "law_r2": 0.9}},
    }}


def test_summary_mean_sd_min_max_over_seeds() -> None:
    s = summarize_seeds({2: _report(0.2, 0.5), 0: _report(0.16, 0.3), 1: _report(0.18, 0.4)})
    assert s["seeds"] == [0, 1, 2]
    up = s["datasets"]["c"]["user-prob"]
    assert up["at_n_max"]["mean"] == pytest.approx(0.18) and up["at_n_max"]["sd"] == pytest.approx(0.02)
    assert (up["oracle_gain_captured"]["min"], up["oracle_gain_captured"]["max"]) == (0.3, 0.5)
    assert up["alpha"]["sd"] == 0.0 and "law_r2" not in up
    assert "oracle_gain_captured" not in s["datasets"]["c"]["oracle"]  # oracle rows have no RM metrics
    table = render_seed_table(s)
    assert "0.1800 ± 0.0200" in table and "0.400 ± 0.100" in table
    one = summarize_seeds({5: _report(0.2, 0.5)})
    assert one["datasets"]["c"]["user-prob"]["at_n_max"]["sd"] == 0.0 and not math.isnan(
        one["datasets"]["c"]["user-prob"]["at_n_max"]["mean"])
    with pytest.raises(ValueError):
        summarize_seeds({})


def test_seed_dirs_share_data_and_candidates(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="generate stages first"):
        link_shared(tmp_path, 1)
    for d in ("data/c", "candidates/c/eval"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "candidates/c/eval/part.parquet").write_text("x")
    sub = link_shared(tmp_path, 3)
    assert sub == tmp_path / "seeds" / "seed-3"
    assert (sub / "candidates/c/eval/part.parquet").read_text() == "x"
    assert link_shared(tmp_path, 3) == sub  # idempotent


def test_spread_over_generation_and_rm_seeds_splits_the_sd_by_source() -> None:
    # generation 0: shares 0.3, 0.5 (mean 0.4, sd 0.141); generation 7: 0.6, 0.6 (mean 0.6, sd 0)
    reports = {(0, 0): _report(0.2, 0.3), (0, 1): _report(0.2, 0.5), (7, 0): _report(0.3, 0.6),
               (7, 1): _report(0.3, 0.6)}
    s = summarize_spread(reports)
    assert s["seeds"] == [0, 1] and s["generation_seeds"] == [0, 7]
    share = s["datasets"]["c"]["user-prob"]["oracle_gain_captured"]  # over all four pairs: the criterion's cell
    assert share["mean"] == pytest.approx(0.5) and share["sd"] == pytest.approx(0.1414, abs=1e-4)
    assert s["by_generation"]["7"]["datasets"]["c"]["user-prob"]["oracle_gain_captured"]["sd"] == 0.0
    src = s["spread"]["c"]["user-prob"]
    assert src["sd_rm"] == pytest.approx(math.sqrt(0.02) / 2) and src["sd_generation"] == pytest.approx(0.1414,
                                                                                                        abs=1e-4)
    assert "generation seeds [0, 7]" in render_seed_table(s) and "generation 0.141" in render_seed_table(s)
    one = summarize_spread({(3, 0): _report(0.2, 0.3), (3, 1): _report(0.2, 0.5)})  # one generation seed
    assert one["datasets"] == summarize_seeds({0: _report(0.2, 0.3), 1: _report(0.2, 0.5)})["datasets"]


def test_generation_seed_run_dirs(tmp_path) -> None:
    assert gen_run_dir(tmp_path, 0, 0) == tmp_path  # the config's own seed: the run itself
    assert gen_run_dir(tmp_path, 2, 0) == tmp_path / "gen" / "gen-2"
