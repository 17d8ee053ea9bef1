"""Feature blocks: known values on text-only blocks, leave-one-out contexts, the MiniLM path."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from ttp_ray.reward.config import STATIC_BLOCKS, FeatureConfig, UserStageConfig
from ttp_ray.reward.features import FeatureRequest, Featurizer, population_context


def _static() -> Featurizer:
    return Featurizer(None, FeatureConfig(blocks=list(STATIC_BLOCKS)))


def test_text_blocks_known_values() -> None:
    fz = _static()
    ctx = fz.build_contexts(["u", "u"], ["i1", "i2"], ["fix flaky test", "fix docs"])["u"]
    assert ctx.n_items == 2 and ctx.len_sum == 5 and ctx.df == {"fix": 2, "flaky": 1, "test": 1, "docs": 1}
    x = fz.features([FeatureRequest(ctx, "Fix the test test suite", ["fix test now", ""])])
    assert x.shape == (2, len(STATIC_BLOCKS)) and fz.dim == len(STATIC_BLOCKS)
    length, ratio, lex_q, lex_u, qtf_sum, qtf_mean, rouge_u = x[0].tolist()
    assert length == pytest.approx(math.log1p(3))
    assert ratio == pytest.approx(math.log1p(3) - math.log1p(2.5))
    assert lex_q == pytest.approx(2 / 3)  # "fix", "test" are in the query, "now" is not
    assert lex_u == pytest.approx((2 / 2 + 1 / 2 + 0) / 3)  # share of outputs containing each token
    assert qtf_sum == pytest.approx((1 + 2) / 2)  # tf_q(fix) + tf_q(test), over max tf_q = 2
    assert qtf_mean == pytest.approx(qtf_sum / 3)
    # ROUGE-1 F1 against each output: "fix test now" vs "fix flaky test" (2 shared of 3 and 3) and vs "fix docs"
    assert rouge_u == pytest.approx((2 * 2 / (3 + 3) + 2 * 1 / (3 + 2)) / 2)
    assert x[1].tolist() == pytest.approx([0.0, -math.log1p(2.5), 0.0, 0.0, 0.0, 0.0, 0.0])  # empty: no div by 0


def test_rouge_user_is_the_golden_rouge1_against_each_profile_output() -> None:
    """The block equals rouge_score's ROUGE-1 F1 (what the golden score uses), averaged over the outputs."""
    from rouge_score import rouge_scorer

    outputs = ["Fix the flaky test in test_main", "docs: fix typo", "Bump version to 1.2 (fix #12)"]
    fz = Featurizer(None, FeatureConfig(blocks=["rouge_user"]))
    ctx = fz.build_contexts(["u"] * 3, ["a", "b", "c"], outputs)["u"]
    cands = ["fix the test", "fix fix typo typo", "unrelated words here"]
    x = fz.features([FeatureRequest(ctx, "q", cands)])[:, 0].tolist()
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    want = [sum(scorer.score(o, c)["rouge1"].fmeasure for o in outputs) / 3 for c in cands]
    assert x == pytest.approx(want, abs=1e-6) and want[2] == 0.0
    # leave-one-out: the pseudo-query's own output is not compared with (it is the golden reference)
    loo = fz.features([FeatureRequest(ctx, "q", cands[:1], exclude_item="a")])[0, 0].item()
    assert loo == pytest.approx(sum(scorer.score(o, cands[0])["rouge1"].fmeasure for o in outputs[1:]) / 2,
                                abs=1e-6)


def test_leave_one_out_excludes_the_pseudo_query_item() -> None:
    fz = _static()
    ctx = fz.build_contexts(["u"] * 3, ["a", "b", "c"], ["alpha beta", "alpha", "gamma delta epsilon"])["u"]
    full = fz.features([FeatureRequest(ctx, "q", ["gamma"])])
    loo = fz.features([FeatureRequest(ctx, "q", ["gamma"], exclude_item="c")])
    blocks = fz.blocks
    assert full[0, blocks.index("lex_user")].item() == pytest.approx(1 / 3)
    assert loo[0, blocks.index("lex_user")].item() == pytest.approx(0.0)  # its own output no longer counts
    assert loo[0, blocks.index("len_ratio_user")].item() == pytest.approx(math.log1p(1) - math.log1p(1.5))


def test_population_context_is_an_average_user() -> None:
    fz = _static()
    ctxs = fz.build_contexts(["u", "v", "v"], ["1", "2", "3"], ["a b", "a", "c c c"])
    pop = population_context(ctxs.values())
    assert pop.mean_len() == pytest.approx((2 + 2) / 2)
    assert pop.df["a"] == pytest.approx((1 / 1 + 1 / 2) / 2)
    # rouge_user for an unseen user compares with outputs taken round-robin over the users
    assert [dict(b) for b in pop.bags.values()] == [{"a": 1, "b": 1}, {"a": 1}, {"c": 3}]


def test_blocks_need_a_backbone_unless_text_only() -> None:
    with pytest.raises(ValueError, match="need a backbone"):
        Featurizer(None, FeatureConfig())


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown feature blocks"):
        FeatureConfig(blocks=["cand", "nope"])
    with pytest.raises(ValueError, match="need mode='pair'"):
        FeatureConfig(blocks=["pair"])
    with pytest.raises(ValueError, match="extra"):
        UserStageConfig(lr_typo=1.0)


def test_minilm_bi_features_and_query_cache() -> None:
    fz = Featurizer.from_config(FeatureConfig(query_cache_size=2))
    assert fz.embed_dim == 384 and fz.dim == 3 * 384 + 8
    ctx = fz.build_contexts(["u", "u"], ["1", "2"], ["[ruff] fix lint", "[ruff] update rules"])["u"]
    x = fz.features([FeatureRequest(ctx, "Change: fix lint errors", ["[ruff] fix lint errors", "add docs"]),
                     FeatureRequest(ctx, "Change: docs", ["add docs"])])
    assert x.shape == (3, fz.dim) and torch.isfinite(x).all()
    e_c = x[:, :384]
    assert torch.allclose(e_c.norm(dim=1), torch.ones(3), atol=1e-5)  # normalised embeddings
    assert torch.allclose(e_c[1], e_c[2], atol=1e-5)  # same candidate text, same embedding
    cos_user = x[:, fz.blocks.index("cos_user") + 2 * 383]  # vector blocks occupy 3 x 384 columns
    assert cos_user[0] > cos_user[1]  # the on-style candidate is closer to the user's outputs
    assert len(fz._query_cache) == 2


def test_reward_package_does_not_import_ray() -> None:
    code = "import sys, ttp_ray.reward, ttp_ray.reward.scorer; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pair_mode_cross_encodes_query_and_candidate() -> None:
    fz = Featurizer.from_config(FeatureConfig(mode="pair"))
    ctx = fz.build_contexts(["u"], ["1"], ["[ruff] fix lint"])["u"]
    x = fz.features([FeatureRequest(ctx, "fix lint", ["[ruff] fix lint", "docs"]),
                     FeatureRequest(ctx, "update docs", ["docs"])])
    assert x.shape == (3, fz.dim) and fz.dim == 2 * 384 + 7
    h = x[:, :384]
    assert torch.allclose(h.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(h[1], h[2], atol=1e-3)  # same candidate, different query: a pair depends on both
