"""The sweep objective without Ray: exact-BoN scoring of pools, the N grid and AUC, and one real trial fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ttp_ray.errors import TTPValidationError
from ttp_ray.reward.config import UserStageConfig
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.tuning.compare import compare_configs, compare_markdown
from ttp_ray.tuning.objective import PoolScorer, SweepData, bon_auc, default_grid, train_and_score

GLOBAL = GlobalStageConfig(epochs=40, lr=3e-2, patience=40, batch_size=64, num_workers=0)


def _data(n_users: int = 4, n_queries: int = 6, m: int = 6, dim: int = 5, seed: int = 0) -> SweepData:
    """Golden = a noisy linear function of the features, rows deliberately shuffled."""
    rng = np.random.default_rng(seed)
    n = n_users * n_queries * m
    x = rng.normal(size=(n, dim)).astype(np.float32)
    g = np.clip(0.3 + 0.1 * x[:, 0] + 0.02 * rng.normal(size=n), 0, 1)
    users = np.repeat([f"u{i}" for i in range(n_users)], n_queries * m)
    queries = np.repeat([f"q{i}" for i in range(n_users * n_queries)], m)
    cands = np.tile(np.arange(m), n_users * n_queries)
    perm = rng.permutation(n)
    return SweepData.from_columns(x[perm], g[perm], users[perm], queries[perm], cands[perm])


def test_from_columns_sorts_query_contiguously():
    d = _data()
    assert d.user_ids == ["u0", "u1", "u2", "u3"]
    assert (np.diff(d.user_idx) >= 0).all()
    assert (d.pool_sizes() == 6).all() and len(d.pool_sizes()) == 24
    with pytest.raises(TTPValidationError, match="N rows"):
        SweepData(d.features, d.golden[:-1], d.user_idx, d.query_ids, d.user_ids)


def test_grid_and_auc():
    assert default_grid(30) == [1, 2, 4, 8, 16, 30]
    assert default_grid(8) == [1, 2, 4, 8] and default_grid(1) == [1]
    assert bon_auc([1, 2, 4], np.array([0.5, 0.5, 0.5])) == pytest.approx(0.5)
    # linear in log N from 0 to 1: the mean over log N is 0.5
    assert bon_auc([1, 2, 4], np.array([0.0, 0.5, 1.0])) == pytest.approx(0.5)
    assert bon_auc([4], np.array([0.7])) == pytest.approx(0.7)


def test_pool_scorer_oracle_anti_oracle_and_collapse():
    d = _data()
    mask = np.ones(len(d.golden), bool)
    s = PoolScorer.validation(d, mask, None)
    assert s.ns == [1, 2, 4, 6]
    oracle = s(d.golden)
    assert oracle["val_bon_max_n"] == pytest.approx(s.reference["val_oracle_max_n"])
    assert oracle["val_bon_n1"] == pytest.approx(s.reference["val_random"])
    assert oracle["val_alpha"] == 0 and oracle["val_beta"] == 0 and oracle["val_rho_q"] == pytest.approx(1)
    anti = s(-d.golden)
    assert anti["val_bon_max_n"] < anti["val_bon_n1"] < oracle["val_bon_max_n"]
    assert anti["val_beta"] == 0 and anti["val_alpha"] == 1  # every user's ρ_u < 0.1: collapsed before hacked
    flat = s(np.zeros_like(d.golden))
    assert flat["val_alpha"] == 1 and flat["val_bon_max_n"] == pytest.approx(s.reference["val_random"])
    with pytest.raises(TTPValidationError, match="N=8"):
        PoolScorer.validation(d, mask, [1, 8])
    with pytest.raises(TTPValidationError, match="validation split is empty"):
        PoolScorer.validation(d, np.zeros_like(mask), None)


def test_train_and_score_reports_every_epoch_and_compares_on_pools():
    d = _data()
    cfg = UserStageConfig(hidden_dim=8, epochs=3, patience=10, val_fraction=0.34, batch_size=64)
    seen = []
    out = train_and_score(d, cfg, global_cfg=GLOBAL,
                          report=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3] and len(out.history) == 3
    assert {"val_bon_auc", "val_alpha", "val_beta", "global_val_bon_auc", "val_oracle_max_n"} <= set(seen[0][1])
    assert out.final["epochs_run"] == 3
    assert out.final["val_random"] <= out.final["val_bon_max_n"] <= out.final["val_oracle_max_n"] + 1e-9
    # the features predict golden, so the learned selector beats random clearly
    assert out.final["val_bon_max_n"] > out.final["val_random"] + 0.02

    pools = _data(n_users=5, n_queries=2, seed=1)  # u4 is unknown to the bank: global head
    table = compare_configs(d, pools, {"default": cfg, "lr-1e-3": cfg.model_copy(update={"lr": 1e-3})},
                            global_cfg=GLOBAL)
    assert list(table["config"]) == ["default", "lr-1e-3"]
    assert isinstance(table, pd.DataFrame) and (table["test_bon_n6"] > table["test_random"]).all()
    md = compare_markdown(table)
    assert md.startswith("| config | N=1 | N=4 | N=6 | AUC |") and "Oracle at N=6" in md
