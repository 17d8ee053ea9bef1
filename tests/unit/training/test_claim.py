"""The method's claim (paper-notes §6, Lemma 5.1): on collapse-prone users a User-Det RM goes flat (ρ_u < 0.1)
while a User-Prob RM trained with the same prior keeps ranking them (ρ_u > 0.1).

ρ_u = Pearson(μ, golden) over each user's held-out candidates (queries never seen in training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttp_ray.reward.config import UserStageConfig
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.training.global_fit import fit_global_head
from ttp_ray.training.synthetic_bank import synthetic_bank_data
from ttp_ray.training.user_fit import fit_user_stage, split_by_query

COLLAPSE = 0.1  # paper Fig. 6: collapsed users have ρ_u < 0.1 under a Det RM


def rho_per_user(mu: np.ndarray, golden: np.ndarray, users: np.ndarray) -> dict[int, float]:
    out = {}
    for u in np.unique(users):
        m = users == u
        a, b = mu[m], golden[m]
        out[int(u)] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-12 and b.std() > 1e-12 else 0.0
    return out


def fit_user_variant(data, probabilistic: bool, prior_strength: float) -> dict[int, float]:
    tr = ~data.held_out
    cfg = UserStageConfig(probabilistic=probabilistic, prior_strength=prior_strength)
    x, g, u, q = data.features[tr], data.golden[tr], data.user_idx[tr], data.query_ids[tr]
    val = split_by_query(u, q, cfg.val_fraction, cfg.seed)
    head = fit_global_head(x, g, val, cfg.head_config(), GlobalStageConfig(epochs=40, lr=3e-3)).head
    res = fit_user_stage(x, g, u, q, head, cfg)
    mu, _ = res.predict(data.features[data.held_out], data.user_idx[data.held_out])
    return rho_per_user(mu, data.golden[data.held_out], data.user_idx[data.held_out])


@pytest.mark.parametrize("seed", [0, 1])
def test_prob_keeps_collapse_prone_users_ranked_where_det_collapses(seed: int) -> None:
    """Controlled cached features (`synthetic_bank_data`): the global head cannot rank collapse-prone users, so
    each user's own correction must learn their (tiny-variance) signal against the same prior (λ = 10)."""
    torch.manual_seed(seed)
    data = synthetic_bank_data(n_users=40, collapse_frac=0.25, seed=seed)
    collapse = set(data.collapse_users.tolist())
    det = fit_user_variant(data, probabilistic=False, prior_strength=10.0)
    prob = fit_user_variant(data, probabilistic=True, prior_strength=10.0)
    report = {u: (round(det[u], 3), round(prob[u], 3)) for u in sorted(collapse)}

    det_collapsed = [u for u in collapse if det[u] < COLLAPSE]
    # Det collapses on some collapse-prone users (measured: 2/10 and 6/10 for seeds 0 and 1; seeds 0-5 give
    # 2, 6, 3, 2, 2, 4 — 5/10 and 4/10 before the output layer was zero-initialised, see RewardHead.init_output) ...
    assert len(det_collapsed) >= 2, report
    # ... Prob keeps every one of them above the threshold, and all collapse-prone users well ranked.
    assert all(prob[u] > COLLAPSE for u in det_collapsed), report
    assert np.mean([prob[u] for u in collapse]) > 0.8, report
    assert np.mean([prob[u] for u in collapse]) > np.mean([det[u] for u in collapse]) + 0.4, report
    # Normal users are ranked well by both (the fix costs the majority nothing).
    normal = [u for u in prob if u not in collapse]
    assert np.mean([prob[u] for u in normal]) > 0.8 and np.mean([det[u] for u in normal]) > 0.8


def test_claim_on_simulated_pools(tmp_path) -> None:
    """The same comparison on the project's synthetic benchmark (`simulate_pools`: planted collapse-prone users)
    with the text-only feature blocks (no encoder, so it runs in seconds).

    Measured here (λ = 10): collapse-prone users' mean ρ_u is 0.31 (Det) vs 0.41 (Prob); one user stays under
    the threshold with both (ρ_u 0.04 Det, 0.01 Prob): the text-only blocks carry no signal for it (an earlier
    measurement with the MiniLM blocks, too slow for CI, gave that user 0.06 Det vs 0.38 Prob). On this benchmark the global head already
    ranks collapse-prone users fairly well (salient query words help every user), so the gap is smaller than
    on the controlled features above; we assert the population-level claim here.
    """
    from ttp_ray.data.config import DatasetConfig, SyntheticConfig
    from ttp_ray.data.loaders import load_dataset
    from ttp_ray.data.simulated import simulate_pools
    from ttp_ray.reward.config import STATIC_BLOCKS, FeatureConfig
    from ttp_ray.reward.features import Featurizer, population_context
    from ttp_ray.training.features_job import build_contexts, compute_features, features_matrix

    ds = load_dataset(DatasetConfig(synthetic=SyntheticConfig(n_users=24, profile_size=30, queries_per_user=4)),
                      tmp_path)
    meta = __import__("json").loads((tmp_path / "source" / "meta.json").read_text())
    fz = Featurizer(None, FeatureConfig(blocks=list(STATIC_BLOCKS)))
    ctx = build_contexts(fz, ds.profile)
    pop = population_context(ctx.values())
    tables = {m: compute_features(fz, simulate_pools(ds, mode=m, n_candidates=n), ctx, pop)
              for m, n in (("rm_train", 8), ("eval", 16))}
    users = sorted(ctx)
    row = {u: i for i, u in enumerate(users)}
    rows = {m: np.array([row[u] for u in t["user_id"].to_pylist()]) for m, t in tables.items()}
    collapse = {row[u] for u in meta["collapse_users"]}
    assert len(collapse) == 6
    tr, ev = tables["rm_train"], tables["eval"]
    x, g, q = features_matrix(tr), tr["rouge1"].to_numpy(), tr["query_id"].to_numpy(zero_copy_only=False)
    rho = {}
    for prob in (False, True):
        cfg = UserStageConfig(probabilistic=prob, prior_strength=10.0)
        val = split_by_query(rows["rm_train"], q, cfg.val_fraction, cfg.seed)
        head = fit_global_head(x, g, val, cfg.head_config(), GlobalStageConfig(epochs=40, lr=3e-3)).head
        res = fit_user_stage(x, g, rows["rm_train"], q, head, cfg)
        mu, _ = res.predict(features_matrix(ev), rows["eval"])
        rho[prob] = rho_per_user(mu, ev["rouge1"].to_numpy(), rows["eval"])
    det_c = [rho[False][u] for u in collapse]
    prob_c = [rho[True][u] for u in collapse]
    print("collapse-prone ρ_u  Det:", np.round(det_c, 3), " Prob:", np.round(prob_c, 3))
    alpha = {p: np.mean([v < COLLAPSE for v in rho[p].values()]) for p in rho}
    assert alpha[True] <= alpha[False]
    assert np.mean(prob_c) > np.mean(det_c) + 0.05
    assert sum(v < COLLAPSE for v in prob_c) <= sum(v < COLLAPSE for v in det_c)
