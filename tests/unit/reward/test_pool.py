"""Pool-aware RM features (issue 13): the consensus column, μ affine in it, and subset scoring that agrees with
re-scoring the subset through the serving API."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
import torch

from ttp_ray.data.config import DatasetConfig, SyntheticConfig
from ttp_ray.data.loaders import load_dataset
from ttp_ray.data.simulated import simulate_pools
from ttp_ray.errors import DataError
from ttp_ray.reward.bank import PersonalizedHead
from ttp_ray.reward.config import STATIC_BLOCKS, FeatureConfig, HeadConfig
from ttp_ray.reward.features import FeatureRequest, Featurizer, UserContext
from ttp_ray.reward.heads import RewardHead
from ttp_ray.reward.pool import pool_features, pool_features_by_offsets, pool_offsets
from ttp_ray.reward.scorer import RewardScorer
from ttp_ray.scoring.selectors import mbr_scores
from ttp_ray.training import TrainingConfig, train_reward_models_local
from ttp_ray.training.features_job import with_pool_column
from ttp_ray.training.scoring_job import load_scorers, score_table


def test_consensus_is_mbr_and_offsets_split_pools() -> None:
    texts = ["fix the bug", "fix bug", "add docs", "add the docs", "docs"]
    assert np.allclose(pool_features(texts[:3], ["consensus"])[:, 0], mbr_scores(texts[:3]))
    off = pool_offsets(["u", "u", "u", "v", "v"], ["a", "a", "a", "a", "a"])
    assert off.tolist() == [0, 3, 5]
    both = pool_features_by_offsets(texts, off, ["consensus"])[:, 0]
    assert np.allclose(both[:3], mbr_scores(texts[:3])) and np.allclose(both[3:], mbr_scores(texts[3:]))
    with pytest.raises(ValueError, match="unknown pool blocks"):
        pool_features(texts, ["nope"])


@pytest.mark.parametrize("user_input", ["features", "hidden"])
def test_mu_is_affine_in_the_pool_column_for_global_and_user_heads(user_input: str) -> None:
    torch.manual_seed(0)
    head = RewardHead(6, HeadConfig(hidden_dim=8, num_layers=2, linear_inputs=1))
    head.fit_normalizer(torch.randn(50, 6))
    for p in head.parameters():
        torch.nn.init.normal_(p)
    model = PersonalizedHead(head, 3, user_input)
    torch.nn.init.normal_(model.bank.weight)
    x, u = torch.randn(7, 6), torch.tensor([0, 1, 2, 0, 1, 2, -1])

    def mu(c: float, f) -> torch.Tensor:  # noqa: ANN001
        y = x.clone()
        y[:, -1] = c
        with torch.no_grad():
            return f(y).mu

    for f in (head, lambda y: model(y, u)):
        slope = mu(1.0, f) - mu(0.0, f)
        assert slope.abs().max() > 1e-3  # the pool column matters ...
        assert torch.allclose(mu(2.5, f), mu(0.0, f) + 2.5 * slope, atol=1e-4)  # ... and only linearly
    # σ² never reads the pool column
    y = x.clone()
    y[:, -1] = 5.0
    with torch.no_grad():
        assert torch.allclose(head(x).var, head(y).var)


def test_featurizer_appends_the_pool_column_from_request_or_precomputed() -> None:
    cfg = FeatureConfig(blocks=["length", "lex_query"], pool_blocks=["consensus"])
    fz = Featurizer(None, cfg)
    ctx = UserContext("u", torch.zeros(0), 0.0, 0.0, {})
    cands = ["fix the bug", "fix bug", "add docs"]
    x = fz.features([FeatureRequest(ctx, "the bug", cands)])
    assert x.shape == (3, 3) and fz.dim == 3
    assert np.allclose(x[:, -1].numpy(), mbr_scores(cands), atol=1e-6)
    pre = np.array([[0.1], [0.2], [0.3]])
    x2 = fz.features([FeatureRequest(ctx, "the bug", cands, pool=pre)])
    assert np.allclose(x2[:, -1].numpy(), pre[:, 0]) and torch.equal(x2[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="pool must have shape"):
        fz.features([FeatureRequest(ctx, "q", cands, pool=pre[:2])])


def test_with_pool_column_needs_whole_pools() -> None:
    t = pa.table({"user_id": ["u"] * 3, "query_id": ["q"] * 3, "cand_idx": pa.array([2, 0, 1], pa.int32()),
                  "text": ["a b", "a", "c"]})
    out = with_pool_column(t, ["consensus"])
    assert out["cand_idx"].to_pylist() == [0, 1, 2]
    assert np.allclose(np.array(out["pool"].to_pylist())[:, 0], mbr_scores(["a", "c", "a b"]))
    with pytest.raises(DataError, match="whole pools"):
        with_pool_column(t.slice(0, 2), ["consensus"], file="part-x.parquet")  # cand_idx 2, 0 -> not 0..n-1


@pytest.fixture(scope="module")
def pool_rm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool-rm")
    ds = load_dataset(DatasetConfig(synthetic=SyntheticConfig(n_users=5, profile_size=10, queries_per_user=2)),
                      tmp / "data")
    train = simulate_pools(ds, mode="rm_train", n_candidates=6)
    evalp = simulate_pools(ds, mode="eval", n_candidates=6)
    cfg = TrainingConfig.model_validate({
        "features": {"blocks": list(STATIC_BLOCKS), "pool_blocks": ["consensus"]},
        "global_stage": {"epochs": 30}, "user_stage": {"epochs": 60}})
    train_reward_models_local(train, ds.profile, tmp / "rm", cfg)
    return tmp / "rm", evalp


@pytest.mark.parametrize("variant", ["global-det", "user-prob"])
def test_scores_of_any_subset_follow_from_mu_and_pool_weight(pool_rm, variant: str) -> None:
    """SCORES' (mu, pool_weight) reproduce what the endpoint returns for every subset of a pool."""
    rm_dir, evalp = pool_rm
    scores = score_table(load_scorers(rm_dir, [variant]), evalp)
    assert scores["pool_weight"].null_count == 0
    sc = RewardScorer.from_checkpoint(rm_dir, variant)
    user, qtext = evalp["user_id"][0].as_py(), evalp["query_text"][0].as_py()
    texts = evalp["text"].to_pylist()[:6]
    mu, w = np.array(scores["mu"].to_pylist()[:6]), np.array(scores["pool_weight"].to_pylist()[:6])
    assert np.allclose(sc.score(user, qtext, texts).mu, mu, atol=1e-5)
    cons_full = mbr_scores(texts)
    for sub in itertools.combinations(range(6), 3):
        sub = list(sub)
        served = sc.score(user, qtext, [texts[i] for i in sub]).mu
        predicted = mu[sub] + w[sub] * (mbr_scores([texts[i] for i in sub]) - cons_full[sub])
        assert np.allclose(served, predicted, atol=1e-5)


def test_per_candidate_variants_have_no_pool_weight(tmp_path) -> None:
    ds = load_dataset(DatasetConfig(synthetic=SyntheticConfig(n_users=3, profile_size=6, queries_per_user=1)),
                      tmp_path / "data")
    train = simulate_pools(ds, mode="rm_train", n_candidates=4)
    cfg = TrainingConfig.model_validate({"features": {"blocks": list(STATIC_BLOCKS)}, "variants": ["global-det"],
                                         "global_stage": {"epochs": 3}})
    train_reward_models_local(train, ds.profile, tmp_path / "rm", cfg)
    out = score_table(load_scorers(tmp_path / "rm", ["global-det"]), simulate_pools(ds, mode="eval", n_candidates=4))
    assert out["pool_weight"].null_count == out.num_rows
