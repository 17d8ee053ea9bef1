"""RM seed spread: the summary statistics and the shared-pool layout (no Ray)."""

from __future__ import annotations

import math

import pytest

from ttp_ray.evaluation.seeds import link_shared, render_seed_table, summarize_seeds


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
