"""The Ray Data path of the evaluation (groupby user → map_groups) gives the in-process numbers."""

from __future__ import annotations

import numpy as np

from ttp_ray.evaluation.bon import Pools
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.job import compute_stats_ray
from ttp_ray.evaluation.pools_io import pools_from_tables, pools_to_tables
from ttp_ray.evaluation.report import report_from_pools
from ttp_ray.evaluation.stats import compute_stats
from ttp_ray.evaluation.theory import PlantedRM, simulate_pools


def _tables():
    rms = {"user-det": PlantedRM(0.4, 0.5, 0.3, 0.2), "user-prob": PlantedRM(0.7, 0.4, 0.1, 0.1)}
    full = simulate_pools(rms, n_users=12, queries_per_user=3, pool_size=8, clip01=True, seed=7)
    # ragged pools: every third query loses its last two candidates
    sizes = np.where(np.arange(full.n_queries) % 3 == 0, 6, 8)
    keep = (np.arange(full.n_candidates) - full.offsets[full.query_of_candidate]) < sizes[full.query_of_candidate]
    pools = Pools(users=full.users, user_codes=full.user_codes, query_ids=full.query_ids,
                  offsets=np.r_[0, np.cumsum(sizes)], golden={g: a[keep] for g, a in full.golden.items()},
                  scores={m: a[keep] for m, a in full.scores.items()})
    return pools_to_tables(pools)


def _assert_same(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and b is not None:
        assert abs(a - b) <= 1e-12 * max(1.0, abs(a)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_ray_data_path_matches_in_process(ray_session) -> None:
    cands, scores = _tables()
    cfg = EvaluationConfig(plots=False, mc_repeats=2, user_rho="within")
    pools, info = pools_from_tables(cands, scores, required_golden=cfg.golden)
    assert pools.sizes.min() == 6 and pools.sizes.max() == 8
    local = compute_stats(pools, cfg)
    remote = compute_stats_ray(pools, cfg, shards=3)  # 3 shards of 4 whole users
    for m in local.bon:
        for g in local.bon[m]:
            np.testing.assert_allclose(remote.bon[m][g], local.bon[m][g], rtol=1e-12, atol=1e-15)
    for m in local.rho_q:
        np.testing.assert_allclose(remote.rho_q[m].rho, local.rho_q[m].rho, atol=1e-12)
        np.testing.assert_array_equal(remote.rho_u[m].const_score, local.rho_u[m].const_score)
        np.testing.assert_allclose(remote.rho_u[m].rho, local.rho_u[m].rho, atol=1e-12)
    rep_local = report_from_pools(pools, cfg, dataset="sim", data_info=info)
    rep_ray = report_from_pools(pools, cfg, dataset="sim", data_info=info, stats=remote)
    rep_local.pop("_plot_data"), rep_ray.pop("_plot_data")
    _assert_same(rep_local, rep_ray)
