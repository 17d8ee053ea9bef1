"""The claims check reads the right numbers and can fail."""

from __future__ import annotations

from ttp_ray.evaluation.claims import check_claims, render_claims


def _rm(curve, alpha, beta, r2):
    return {"kind": "rm", "bon": {"rouge1": curve}, "diagnostics": {"alpha": alpha, "beta": beta},
            "law": {"paper": {"r2": r2}}}


def _report(user_prob_last: float, prob_alpha: float) -> dict:
    return {
        "golden": "rouge1", "ns": [1, 4, 16],
        "theory": {"c_n_plain": {"r2": 0.95}, "c_n_finite_pool": {"r2": 0.97}},
        "methods": {
            "oracle": {"kind": "oracle", "bon": {"rouge1": [0.1, 0.3, 0.5]}},
            "global-det": _rm([0.1, 0.15, 0.2], 0.3, 0.2, 0.92),
            "global-prob": _rm([0.1, 0.16, 0.21], 0.2, 0.1, 0.93),
            "user-det": _rm([0.1, 0.15, 0.19], 0.4, 0.2, 0.91),
            "user-prob": _rm([0.1, 0.2, user_prob_last], prob_alpha, 0.1, 0.95),
        },
    }


def test_all_claims_hold() -> None:
    claims = {c["claim"]: c for c in check_claims(_report(0.3, 0.1))}
    assert all(c["passed"] for c in claims.values()), claims
    assert "0.970 (c_n_finite_pool" in claims["oracle follows mu + sigma*c_N"]["detail"]
    assert "worst user-det" in claims["scaling law predicts every RM's curve"]["detail"]
    assert "(+0.0900)" in claims["User-Prob best RM at N=16"]["detail"]


def test_claims_fail_where_numbers_say_so() -> None:
    claims = {c["claim"]: c for c in check_claims(_report(0.2, 0.5))}
    assert claims["User-Prob best RM at N=16"]["passed"] is False  # 0.20 < global-prob 0.21
    assert claims["Prob mitigates collapse (alpha: Prob <= Det)"]["passed"] is False  # 0.5 > 0.4
    assert claims["Prob mitigates hacking (beta: Prob <= Det)"]["passed"] is True
    assert claims["User-Prob rises with N"]["passed"] is True
    bad = _report(0.3, 0.1)
    bad["methods"]["global-det"]["law"]["paper"]["r2"] = -2.0
    assert not {c["claim"]: c for c in check_claims(bad)}["scaling law predicts every RM's curve"]["passed"]
    md = "\n".join(render_claims({"d": check_claims(bad)}))
    assert "| d | scaling law predicts every RM's curve | **no** |" in md
