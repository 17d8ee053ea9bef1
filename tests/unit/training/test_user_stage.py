"""The per-user stage: query-level split, per-user early stopping, the report callback, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttp_ray.errors import TTPValidationError
from ttp_ray.reward.config import UserStageConfig
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.training.global_fit import fit_global_head
from ttp_ray.training.synthetic_bank import synthetic_bank_data
from ttp_ray.training.user_fit import fit_user_stage, split_by_query


def test_split_is_by_query_within_each_user() -> None:
    users = np.repeat([0, 0, 0, 0, 0, 1, 1, 2], 4)  # user 0: 5 queries, user 1: 2, user 2: 1
    queries = np.repeat(["a", "b", "c", "d", "e", "f", "g", "h"], 4).astype(object)
    val = split_by_query(users, queries, 0.4, seed=3)
    for q in set(queries):  # all candidates of a query are on the same side
        assert len(set(val[queries == q])) == 1
    n_val = {u: len(set(queries[(users == u) & val])) for u in (0, 1, 2)}
    assert n_val == {0: 2, 1: 1, 2: 0}  # round(0.4*5)=2; >=1 each side for 2 queries; none for 1 query
    assert np.array_equal(val, split_by_query(users, queries, 0.4, seed=3))  # deterministic
    assert not split_by_query(users, queries, 0.0).any()


def _small():
    data = synthetic_bank_data(n_users=8, n_queries=6, n_eval_queries=0, collapse_frac=0.25, seed=2)
    cfg = UserStageConfig(epochs=40, patience=5)
    val = split_by_query(data.user_idx, data.query_ids, cfg.val_fraction, cfg.seed)
    head = fit_global_head(data.features, data.golden, val, cfg.head_config(), GlobalStageConfig(epochs=10)).head
    return data, cfg, head


def test_per_user_early_stopping_keeps_each_users_best_and_reports() -> None:
    data, cfg, head = _small()
    seen: list[tuple[int, dict]] = []
    res = fit_user_stage(data.features, data.golden, data.user_idx, data.query_ids, head, cfg,
                         report=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == list(range(len(seen))) and seen[0][0] == 0
    assert {"val_nll", "val_mse", "val_sigma", "train_loss", "active_users"} <= set(seen[-1][1])
    assert (res.n_val > 0).all() and (res.best_epoch >= 0).all()
    assert np.isfinite(res.val_loss).all()
    # the kept parameters are each user's best: their validation NLL equals the recorded best
    val = split_by_query(data.user_idx, data.query_ids, cfg.val_fraction, cfg.seed)
    mu, var = res.predict(data.features[val], data.user_idx[val])
    nll = 0.5 * (np.log(var) + (data.golden[val] - mu) ** 2 / var)
    for u in range(8):
        m = data.user_idx[val] == u
        assert nll[m].mean() == pytest.approx(res.val_loss[u], rel=1e-4, abs=1e-5)
    # and no user ends worse than the global head on its own validation queries (epoch 0 is a candidate)
    with torch.no_grad():
        g_out = head(torch.tensor(data.features[val]))
    g_nll = 0.5 * (np.log(g_out.var.numpy()) + (data.golden[val] - g_out.mu.numpy()) ** 2 / g_out.var.numpy())
    for u in range(8):
        m = data.user_idx[val] == u
        assert res.val_loss[u] <= g_nll[m].mean() + 1e-5
    assert (res.best_epoch > 0).sum() >= 4  # most users did improve on the global head


def test_user_without_training_rows_keeps_the_global_head() -> None:
    data, cfg, head = _small()
    keep = data.user_idx != 3
    res = fit_user_stage(data.features[keep], data.golden[keep], data.user_idx[keep], data.query_ids[keep], head,
                         cfg, n_users=8)
    assert torch.count_nonzero(res.model.bank.weight[3]) == 0
    x = torch.tensor(data.features[:5])
    assert torch.allclose(res.model(x, torch.full((5,), 3)).mu, head(x).mu)


def test_head_mismatch_and_bad_inputs_are_named() -> None:
    data, cfg, head = _small()
    with pytest.raises(TTPValidationError, match="user_stage.hidden_dim"):
        fit_user_stage(data.features, data.golden, data.user_idx, data.query_ids, head,
                       cfg.model_copy(update={"hidden_dim": 7}))
    with pytest.raises(TTPValidationError, match="N rows"):
        fit_user_stage(data.features[:-1], data.golden, data.user_idx, data.query_ids, head, cfg)
    with pytest.raises(TTPValidationError, match="user_idx"):
        fit_user_stage(data.features, data.golden, -data.user_idx - 1, data.query_ids, head, cfg)


def test_split_by_query_ignores_row_order_and_user_numbering() -> None:
    """The global stage and each per-user worker slice must hold out the same queries (issue 13, 4c)."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), 10)
    queries = np.array([f"q{u}-{i // 2}" for u, i in zip(users, np.tile(np.arange(10), 6), strict=True)])
    val = split_by_query(users, queries, 0.4, seed=5)
    perm = rng.permutation(len(users))
    renumbered = 100 - users  # another numbering of the same users (a worker's local index)
    assert np.array_equal(split_by_query(renumbered[perm], queries[perm], 0.4, seed=5), val[perm])
    assert not np.array_equal(split_by_query(users, queries, 0.4, seed=6), val)  # the seed still matters


# ---- within-query objective ----------------------------------------------------------------------------------
def _levels_data(n_users: int = 6, n_queries: int = 12, n_cands: int = 8, seed: int = 0):
    """Pools whose level is explained by a feature that ranks candidates the wrong way *inside* a pool.

    x1: a within-pool signal (+); x2 = the pool's level proxy + a within-pool part that hurts (−). A pointwise
    fit sees x2 explain which queries are easy and weights it +; selection inside a pool then prefers bad
    candidates. The within-query fit only sees the differences.
    """
    rng = np.random.default_rng(seed)
    n = n_users * n_queries * n_cands
    u = np.repeat(np.arange(n_users), n_queries * n_cands)
    q = np.repeat(np.arange(n_users * n_queries), n_cands).astype(str).astype(object)
    level = np.repeat(rng.normal(size=n_users * n_queries), n_cands)
    x1 = rng.normal(size=n)
    inside = rng.normal(size=n)
    x2 = 2.0 * level + 0.5 * inside
    g = 0.4 + 0.15 * level + 0.03 * x1 - 0.03 * inside + 0.005 * rng.normal(size=n)
    return np.stack([x1, x2], 1).astype(np.float32), g.astype(np.float32), u, q


def _bon_at_max(g: np.ndarray, s: np.ndarray, q: np.ndarray) -> float:
    """Mean over pools of the golden score of the top-μ candidate (whole-pool Best-of-N)."""
    return float(np.mean([g[q == k][np.argmax(s[q == k])] for k in np.unique(q)]))


@pytest.mark.parametrize("prob", [False, True])
def test_within_query_objective_learns_the_within_pool_ranking(prob: bool) -> None:
    x, g, u, q = _levels_data()
    groups = np.unique(q, return_inverse=True)[1]
    gcfg = GlobalStageConfig(num_workers=0, epochs=200, lr=3e-2, patience=200)
    picks = {}
    for objective in ("pointwise", "within_query"):
        cfg = UserStageConfig(num_layers=0, probabilistic=prob, objective=objective, val_fraction=0, epochs=200,
                              beta_nll=1.0 if prob else 0.0)
        head = fit_global_head(x, g, None, cfg.head_config(), gcfg, groups=groups, objective=objective).head
        w = head.out.weight.detach()[0] / head.x_std  # μ's slope per raw feature
        res = fit_user_stage(x, g, u, q, head, cfg, n_users=int(u.max()) + 1)
        mu, _ = res.predict(x, u)
        picks[objective] = (float(w[1]), _bon_at_max(g, mu, q))
    assert picks["pointwise"][0] > 0 > picks["within_query"][0]  # x2's within-pool part hurts: the sign flips
    assert picks["within_query"][1] > picks["pointwise"][1] + 0.01
    oracle = _bon_at_max(g, g, q)
    assert picks["within_query"][1] > oracle - 0.02  # close to the oracle on these low-noise pools


def test_within_query_user_stage_is_reproducible_and_needs_no_seed_without_validation() -> None:
    x, g, u, q = _levels_data(seed=1)
    runs = []
    for seed in (0, 0, 5):
        cfg = UserStageConfig(num_layers=0, objective="within_query", val_fraction=0, epochs=50, seed=seed,
                              beta_nll=1.0)
        res = fit_user_stage(x, g, u, q, None, cfg)
        runs.append(res.predict(x, u)[0])
    assert np.array_equal(runs[0], runs[1])  # same seed: identical
    assert np.array_equal(runs[0], runs[2])  # full-batch, no split: the seed has nothing left to change
