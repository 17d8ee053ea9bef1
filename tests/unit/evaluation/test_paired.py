"""The paired comparison of two selectors: share difference, the cluster bootstrap over users, the report section
and the claim it decides."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ttp_ray.evaluation.claims import check_claims
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.paired import exact_at, paired_share_difference
from ttp_ray.evaluation.report import build_report, merge_reports
from ttp_ray.evaluation.seeds import summarize_seeds

USERS = np.repeat(np.arange(6), 3)  # 6 users x 3 queries
ORACLE, MEAN = np.full(18, 0.5), np.full(18, 0.1)  # gain 0.4 on every query


def test_identical_selectors_differ_by_exactly_zero() -> None:
    a = np.linspace(0.1, 0.5, 18)
    d = paired_share_difference(a, a.copy(), ORACLE, MEAN, USERS, resamples=300)
    assert d["share_diff"] == 0.0 and d["ci"] == [0.0, 0.0] and d["a_better_users"] == 0


def test_a_win_on_every_user_is_resolved_and_the_difference_is_the_share_gap() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.1, 0.3, 18)
    a = b + rng.uniform(0.05, 0.1, 18)  # ahead on every query
    d = paired_share_difference(a, b, ORACLE, MEAN, USERS, resamples=500, seed=3)
    share = lambda x: (x.mean() - MEAN.mean()) / (ORACLE.mean() - MEAN.mean())  # noqa: E731
    assert d["share_diff"] == pytest.approx(share(a) - share(b))
    assert 0 < d["ci"][0] <= d["share_diff"] <= d["ci"][1]
    assert d["a_better_users"] == 6 and d["users"] == 6 and d["queries"] == 18
    assert d == paired_share_difference(a, b, ORACLE, MEAN, USERS, resamples=500, seed=3)  # seeded


def test_one_lucky_user_leaves_the_difference_unresolved() -> None:
    b = np.full(18, 0.2)
    a = b.copy()
    a[USERS == 0] += 0.3  # one user carries the whole gap; the rest are slightly behind
    a[USERS != 0] -= 0.01
    d = paired_share_difference(a, b, ORACLE, MEAN, USERS, resamples=2000)
    assert d["share_diff"] > 0 and d["ci"][0] < 0 < d["ci"][1]
    assert d["a_better_users"] == 1


def test_user_aggregate_weights_each_user_equally() -> None:
    codes = np.array([0, 0, 0, 1])  # user 0 has 3 queries, user 1 one
    a, b = np.array([0.3, 0.3, 0.3, 0.1]), np.full(4, 0.2)
    o, m = np.full(4, 0.5), np.full(4, 0.1)
    by_query = paired_share_difference(a, b, o, m, codes, aggregate="query", resamples=0)["share_diff"]
    by_user = paired_share_difference(a, b, o, m, codes, aggregate="user", resamples=0)["share_diff"]
    assert by_query == pytest.approx((0.3 - 0.1) / 4 / 0.4 * 1)  # (3 * 0.1 - 0.1) / 4 over a gain of 0.4
    assert by_user == pytest.approx(0.0)  # +0.1 for one user, -0.1 for the other


def test_bad_shapes_and_levels_are_errors() -> None:
    with pytest.raises(ValueError, match="one shape"):
        paired_share_difference(np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="level"):
        paired_share_difference(np.zeros(3), np.zeros(3), np.ones(3), np.zeros(3), np.zeros(3, int), level=1.5)


def test_exact_at_clips_n_to_each_pool() -> None:
    gold, offs = np.array([0.1, 0.9, 0.5, 0.2, 0.4]), np.array([0, 2, 5])
    assert exact_at(gold, None, offs, 4).tolist() == pytest.approx([0.9, 0.5])  # N above a pool = whole pool
    assert exact_at(gold, -gold, offs, 4).tolist() == pytest.approx([0.1, 0.2])
    assert exact_at(gold, None, offs, 1).tolist() == pytest.approx([0.5, 1.1 / 3])


def _tables(n_users: int, rm_edge: float) -> tuple[pa.Table, pa.Table]:
    """Pools of 4 candidates, 2 queries per user; the RM's μ is the golden score plus noise of size 1 - rm_edge."""
    rng = np.random.default_rng(1)
    rows, srows = [], []
    for u in range(n_users):
        for q in range(2):
            gold = rng.uniform(0, 1, 4)
            mu = rm_edge * gold + (1 - rm_edge) * rng.uniform(0, 1, 4)
            for c in range(4):
                key = {"user_id": f"u{u}", "query_id": f"q{q}", "cand_idx": c}
                rows.append({**key, "mode": "eval", "text": f"candidate {c} of {u} {q}", "num_tokens": 4,
                             "logprob": float(-c), "rouge1": float(gold[c]), "rougeL": float(gold[c])})
                srows.append({**key, "method": "user-prob", "mu": float(mu[c]), "sigma": 0.1, "fallback": False})
    return pa.Table.from_pylist(rows), pa.Table.from_pylist(srows)


def test_report_pairs_every_rm_with_the_best_training_free_selector() -> None:
    cands, scores = _tables(12, rm_edge=0.95)
    cfg = EvaluationConfig(ns=[1, 2, 4], mbr_subsets=50, allocation={"enabled": False}, plots=False,
                           paired_resamples=400)
    report = build_report(cands, scores, cfg, dataset="toy")
    p = report["paired"]
    m = report["methods"]
    free = {k: e["oracle_gain_captured"] for k, e in m.items() if e["kind"] == "training-free"}
    assert p["baseline"] == max(free, key=free.get) and p["n"] == 4
    d = p["methods"]["user-prob"]
    assert d["share_diff"] == pytest.approx(m["user-prob"]["oracle_gain_captured"] - free[p["baseline"]])
    assert d["ci"][0] > 0  # μ tracks the golden score closely: a resolved win
    claim = next(c for c in check_claims(report) if "training-free" in c["claim"])
    assert claim["passed"] is True and "CI" in claim["detail"]
    row = merge_reports([report])["summary"]["user-prob"]["toy"]
    assert row["vs_best_free"] == pytest.approx(d["share_diff"]) and row["vs_best_free_ci_lo"] == d["ci"][0]
    spread = summarize_seeds({0: merge_reports([report]), 1: merge_reports([report])})
    assert spread["datasets"]["toy"]["user-prob"]["vs_best_free"]["sd"] == 0.0
    assert "paired_resamples" in report["config"]
    off = build_report(cands, scores, cfg.model_copy(update={"paired_resamples": 0}), dataset="toy")
    assert "paired" not in off


def _claim_report(diff: float, ci: list[float]) -> dict:
    rm = {"kind": "rm", "bon": {"rouge1": [0.1, 0.3]}, "diagnostics": {"alpha": 0.1, "beta": 0.1},
          "law": {"paper": {"r2": 0.95}}}
    free = {"kind": "training-free", "bon": {"rouge1": [0.1, 0.3 - diff]}}
    return {"golden": "rouge1", "ns": [1, 4], "theory": {}, "data": {"users": 5, "queries": 10},
            "methods": {"user-prob": rm, "mbr": free},
            "paired": {"baseline": "mbr", "n": 4, "methods": {"user-prob": {
                "share_diff": diff, "ci": ci, "level": 0.95, "users": 5}}}}


@pytest.mark.parametrize(("diff", "ci", "passed", "mark"), [
    (0.05, [0.01, 0.09], True, None),  # ahead, and the interval over users stays above 0
    (0.05, [-0.02, 0.12], None, "not resolved"),  # ahead here, reversible by drawing other users
    (-0.05, [-0.12, 0.02], False, None),  # behind
])
def test_claim_reads_the_paired_interval(diff: float, ci: list[float], passed: bool | None,
                                         mark: str | None) -> None:
    from ttp_ray.evaluation.claims import render_claims

    claim = next(c for c in check_claims(_claim_report(diff, ci)) if "training-free" in c["claim"])
    assert claim["passed"] is passed and claim.get("mark") == mark
    assert f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" in claim["detail"]
    if mark:
        assert "| not resolved |" in "\n".join(render_claims({"d": [claim]}))
