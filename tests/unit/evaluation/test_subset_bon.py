"""MBR's Monte-Carlo subset BoN against brute force over every subset, and the report's training-free methods."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.report import build_report, merge_reports
from ttp_ray.evaluation.subset_bon import mbr_subset_bon
from ttp_ray.scoring.selectors import (
    logprob_scores,
    mbr_from_matrix,
    mbr_scores,
    pairwise_rouge,
    profile_mbr_scores,
)

TEXTS = ["fix the flaky test", "fix flaky test in ci", "add docs for fixtures", "fix test", "bump version",
         "docs: add fixture docs"]
GOLD = np.array([0.5, 0.4, 0.1, 0.3, 0.0, 0.2])


def _brute_force(texts: list[str], gold: np.ndarray, n: int) -> float:
    """Exact expected golden of MBR's pick over all N-subsets (ties split evenly)."""
    sim = pairwise_rouge(texts)
    vals = []
    for sub in itertools.combinations(range(len(texts)), n):
        s = mbr_from_matrix(sim, np.array(sub))
        best = np.flatnonzero(s == s.max())
        vals.append(gold[np.array(sub)[best]].mean())
    return float(np.mean(vals))


def test_mbr_scores_mean_similarity_to_others() -> None:
    s = mbr_scores(["a b", "a b", "c"])
    assert s.tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert mbr_scores(["only one"]).tolist() == [0.0]


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_mbr_montecarlo_matches_brute_force(n: int) -> None:
    offsets = np.array([0, len(TEXTS)])
    mc = mbr_subset_bon(TEXTS, {"rouge1": GOLD}, offsets, [n], n_subsets=4000, seed=1)["rouge1"]
    mean, se = mc.aggregate(np.array([1.0]))
    exact = _brute_force(TEXTS, GOLD, n)
    assert abs(mean[0] - exact) <= 4 * se[0] + 1e-12
    if n == len(TEXTS):  # one subset: no Monte-Carlo noise at all
        assert se[0] == 0.0 and mean[0] == pytest.approx(exact)


def test_mbr_montecarlo_is_seeded() -> None:
    offsets = np.array([0, 3, 6])
    a = mbr_subset_bon(TEXTS, {"rouge1": GOLD}, offsets, [2], n_subsets=50, seed=3)["rouge1"]
    b = mbr_subset_bon(TEXTS, {"rouge1": GOLD}, offsets, [2], n_subsets=50, seed=3)["rouge1"]
    assert np.array_equal(a.mean, b.mean)


def test_profile_mbr_is_mean_rouge1_against_each_past_output() -> None:
    from rouge_score import rouge_scorer

    outputs = ["Fix the flaky test", "docs: add fixtures", "bump version to 2.0"]
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    want = [np.mean([scorer.score(o, t)["rouge1"].fmeasure for o in outputs]) for t in TEXTS]
    assert profile_mbr_scores(TEXTS, outputs) == pytest.approx(want, abs=1e-12)
    assert profile_mbr_scores(TEXTS, []).tolist() == [0.0] * len(TEXTS)  # a user with no history


def test_logprob_scores_sum_and_per_token() -> None:
    lp, nt = np.array([-2.0, -6.0, np.nan]), np.array([2, 12, 3])
    assert logprob_scores(lp, nt, per_token=False).tolist() == [-2.0, -6.0, -np.inf]
    assert logprob_scores(lp, nt, per_token=True).tolist() == [-1.0, -0.5, -np.inf]


def test_report_has_training_free_methods_and_claim() -> None:
    n = len(TEXTS)
    cands = pa.table({"user_id": ["u"] * n * 2, "query_id": ["q1"] * n + ["q2"] * n,
                      "cand_idx": list(range(n)) * 2, "mode": ["eval"] * n * 2, "text": TEXTS * 2,
                      "num_tokens": [len(t.split()) for t in TEXTS] * 2,
                      "logprob": [-1.0 * (i + 1) for i in range(n)] * 2,
                      "rouge1": list(GOLD) + list(GOLD[::-1]), "rougeL": list(GOLD) + list(GOLD[::-1])})
    scores = pa.table({"user_id": ["u"] * n * 2, "query_id": ["q1"] * n + ["q2"] * n,
                       "cand_idx": list(range(n)) * 2, "method": ["user-prob"] * n * 2,
                       "mu": list(GOLD) + list(GOLD[::-1]), "sigma": [0.1] * n * 2, "fallback": [False] * n * 2})
    cfg = EvaluationConfig(ns=[1, 2, 4], mbr_subsets=100, allocation={"enabled": False}, plots=False)
    report = build_report(cands, scores, cfg, dataset="toy", profiles={"u": ["fix flaky test", "add docs"]})
    m = report["methods"]
    assert m["mbr"]["kind"] == "training-free" and "montecarlo" in m["mbr"]["evaluated"]
    # MBR against the user's history: per candidate, so exact BoN; at N = n it picks the best-matching text
    assert m["profile-mbr"]["kind"] == "training-free" and m["profile-mbr"]["evaluated"] == "exact"
    best = int(np.argmax(profile_mbr_scores(TEXTS, ["fix flaky test", "add docs"])))
    assert best == 0
    assert "profile-mbr" not in build_report(cands, scores, cfg, dataset="toy")["methods"]  # no profile given
    assert m["logprob"]["evaluated"] == "exact"
    # log-prob sum prefers candidate 0: golden 0.5 on q1 and 0.2 on q2 once N covers it
    assert m["logprob"]["bon"]["rouge1"][0] == pytest.approx(GOLD.mean())
    assert len(m["mbr"]["se"]["rouge1"]) == 3
    merged = merge_reports([report])
    assert "oracle_gain_captured" in merged["summary"]["mbr"]["toy"]
    from ttp_ray.evaluation.claims import check_claims

    claim = [c for c in check_claims(report) if "training-free" in c["claim"]]
    assert len(claim) == 1 and claim[0]["passed"] is True  # user-prob's μ is the golden score itself


def test_beta_claim_not_measurable_when_every_user_has_one_query() -> None:
    from ttp_ray.evaluation.claims import check_claims

    def rm(alpha: float, beta: float) -> dict:
        return {"kind": "rm", "bon": {"rouge1": [0.1, 0.2]}, "diagnostics": {"alpha": alpha, "beta": beta},
                "law": {"paper": {"r2": 0.95}}}

    report = {"golden": "rouge1", "ns": [1, 4], "theory": {}, "data": {"users": 5, "queries": 5},
              "methods": {m: rm(0.2, 0.0) for m in ("global-det", "global-prob", "user-det", "user-prob")}}
    by_claim = {c["claim"]: c for c in check_claims(report)}
    hack = by_claim["Prob mitigates hacking (beta: Prob <= Det)"]
    assert hack["passed"] is None and hack["detail"].startswith("not measurable")
    assert by_claim["Prob mitigates collapse (alpha: Prob <= Det)"]["passed"] is True
    report["data"]["queries"] = 10  # two queries per user: measurable again
    assert {c["claim"]: c for c in check_claims(report)}["Prob mitigates hacking (beta: Prob <= Det)"]["passed"]


def _brute_force_pool_rm(texts: list[str], gold: np.ndarray, base: np.ndarray, w: np.ndarray, n: int) -> float:
    """Exact expected golden of a pool-aware RM's pick (μ_S = base + w·consensus_S) over all N-subsets."""
    sim = pairwise_rouge(texts)
    vals = []
    for sub in itertools.combinations(range(len(texts)), n):
        idx = np.array(sub)
        s = base[idx] + w[idx] * mbr_from_matrix(sim, idx)
        vals.append(gold[idx[np.flatnonzero(s == s.max())]].mean())
    return float(np.mean(vals))


def test_pool_aware_rm_is_evaluated_on_each_subset_against_brute_force() -> None:
    """SCORES rows with `pool_weight` are re-scored on every sampled subset (not ranked by whole-pool μ)."""
    n = len(TEXTS)
    base = np.array([0.0, 0.3, 0.1, -0.2, 0.05, 0.2])
    w = np.array([1.5, 0.5, 1.0, 2.0, 1.0, 0.8])
    mu_full = base + w * mbr_scores(TEXTS)  # what the endpoint returns for the whole pool
    cands = pa.table({"user_id": ["u"] * n, "query_id": ["q1"] * n, "cand_idx": list(range(n)),
                      "mode": ["eval"] * n, "text": TEXTS, "rouge1": list(GOLD), "rougeL": list(GOLD)})
    scores = pa.table({"user_id": ["u"] * n, "query_id": ["q1"] * n, "cand_idx": list(range(n)),
                       "method": ["user-prob"] * n, "mu": list(mu_full), "sigma": [0.1] * n,
                       "fallback": [False] * n, "pool_weight": list(w)})
    cfg = EvaluationConfig(ns=[1, 2, 3, 6], mbr_subsets=3000, allocation={"enabled": False}, plots=False)
    report = build_report(cands, scores, cfg, dataset="toy")
    entry = report["methods"]["user-prob"]
    assert entry["pool_aware"] is True and "montecarlo" in entry["evaluated"]
    assert entry["calibration"]["mean_sigma"] == pytest.approx(0.1)
    from ttp_ray.evaluation.render import render_markdown

    assert "Pool-aware RMs (user-prob)" in render_markdown(report)
    for k, nn in enumerate([1, 2, 3, 6]):
        exact = _brute_force_pool_rm(TEXTS, GOLD, base, w, nn)
        assert abs(entry["bon"]["rouge1"][k] - exact) <= 4 * entry["se"]["rouge1"][k] + 1e-12
    # at N = 2 both members have the same consensus: the pick is base + w·s, not whole-pool μ's order
    assert _brute_force_pool_rm(TEXTS, GOLD, base, w, 2) != pytest.approx(
        _brute_force_pool_rm(TEXTS, GOLD, mu_full, np.zeros(n), 2))


def test_prob_rms_report_calibration_of_sigma() -> None:
    from ttp_ray.evaluation.calibration import calibration

    rng = np.random.default_rng(0)
    mu = rng.normal(size=20000)
    gold = mu + rng.normal(scale=0.5, size=mu.size)
    good = calibration(mu, np.full(mu.size, 0.5), gold)
    assert good["inside_1sigma"] == pytest.approx(0.683, abs=0.01)
    assert good["inside_2sigma"] == pytest.approx(0.954, abs=0.01)
    over = calibration(mu, np.full(mu.size, 2.0), gold)
    assert over["inside_1sigma"] > 0.95 and over["nll"] > good["nll"]


def test_within_query_calibration_profiles_out_each_querys_level() -> None:
    """An RM whose μ is right inside every query but off by a per-query level (what the within-query objective
    learns) is badly calibrated in absolute terms and calibrated within query."""
    from ttp_ray.evaluation.calibration import calibration

    rng = np.random.default_rng(1)
    n_q, n = 2000, 8
    offsets = np.arange(0, n_q * n + 1, n)
    mu = rng.normal(size=n_q * n)
    gold = mu + np.repeat(rng.normal(scale=3.0, size=n_q), n) + rng.normal(scale=0.5, size=mu.size)
    cal = calibration(mu, np.full(mu.size, 0.5), gold, offsets)
    assert cal["inside_1sigma"] < 0.3
    wq = cal["within_query"]
    assert wq["inside_1sigma"] == pytest.approx(0.683, abs=0.01)
    assert wq["inside_2sigma"] == pytest.approx(0.954, abs=0.01)
    assert wq["nll"] < cal["nll"]
    # one-candidate queries carry no within-query information: left out, not counted as perfect
    single = calibration(mu[:3], np.full(3, 0.5), gold[:3], np.array([0, 1, 2, 3]))
    assert single["within_query"] is None


def test_pool_aware_ties_break_at_random_not_by_float_error() -> None:
    """A consensus-only RM ties both members of every 2-subset (equal consensus): N=2 is a random pick, even
    though its whole-pool μ, rounded in float32, carries the whole pool's ordering in its last bits."""
    n = len(TEXTS)
    w = np.full(n, 0.3)
    mu_full = (np.float32(0.1) + np.float32(0.3) * mbr_scores(TEXTS).astype(np.float32)).astype(np.float64)
    cands = pa.table({"user_id": ["u"] * n, "query_id": ["q1"] * n, "cand_idx": list(range(n)),
                      "mode": ["eval"] * n, "text": TEXTS, "rouge1": list(GOLD), "rougeL": list(GOLD)})
    scores = pa.table({"user_id": ["u"] * n, "query_id": ["q1"] * n, "cand_idx": list(range(n)),
                       "method": ["user-det"] * n, "mu": list(mu_full), "sigma": [None] * n,
                       "fallback": [False] * n, "pool_weight": list(w)}).cast(
        pa.schema([("user_id", pa.string()), ("query_id", pa.string()), ("cand_idx", pa.int64()),
                   ("method", pa.string()), ("mu", pa.float64()), ("sigma", pa.float64()),
                   ("fallback", pa.bool_()), ("pool_weight", pa.float64())]))
    cfg = EvaluationConfig(ns=[1, 2], mbr_subsets=4000, allocation={"enabled": False}, plots=False)
    e = build_report(cands, scores, cfg, dataset="toy")["methods"]["user-det"]
    assert abs(e["bon"]["rouge1"][1] - GOLD.mean()) <= 4 * e["se"]["rouge1"][1]
