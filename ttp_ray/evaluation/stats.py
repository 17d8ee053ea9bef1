"""Per-query and per-user statistics that the report aggregates: exact Best-of-N curves on N = 1..M_max for
every method and golden, pool moments, ρ_q and ρ_u (the part `job.compute_stats_ray` runs as Ray Data tasks,
hence the Arrow round trip)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ttp_ray.evaluation import bon, theory
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.diagnostics import Correlation, query_correlation, user_correlation

__all__ = ["EvalStats", "compute_stats"]


@dataclass
class EvalStats:
    """Per-query and per-user results that everything else is aggregated from.

    Curves are on `grid` = 1..M_max (N above a pool's size means the whole pool). `bon[m][g]` is (Q, G) for
    method m (including "oracle") and golden g; correlations use `cfg.golden`, `cfg.correlation`, `cfg.user_rho`.
    """

    grid: np.ndarray
    mean: dict[str, np.ndarray]  # golden -> (Q,) pool mean
    std: dict[str, np.ndarray]  # golden -> (Q,) pool std, ddof=1
    bon: dict[str, dict[str, np.ndarray]]  # method -> golden -> (Q, G)
    rho_q: dict[str, Correlation]  # method -> (Q,)
    rho_u: dict[str, Correlation]  # method -> (U,)

    def to_arrow(self, query_index: np.ndarray, user_index: np.ndarray, user_codes: np.ndarray) -> pa.Table:
        """One row per query with global indices (for Ray Data); per-user values repeat on each query row."""
        cols: dict[str, Any] = {"q": query_index, "u": user_index[user_codes]}
        g_size = self.grid.size
        for g in self.mean:
            cols[f"mean::{g}"] = self.mean[g]
            cols[f"std::{g}"] = self.std[g]
        for m, per_g in self.bon.items():
            for g, arr in per_g.items():
                cols[f"bon::{m}::{g}"] = pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), g_size)
        for m, c in self.rho_q.items():
            cols[f"rho_q::{m}"], cols[f"cs_q::{m}"], cols[f"cg_q::{m}"] = c.rho, c.const_score, c.const_golden
        for m, c in self.rho_u.items():
            cols[f"rho_u::{m}"] = c.rho[user_codes]
            cols[f"cs_u::{m}"] = c.const_score[user_codes]
            cols[f"cg_u::{m}"] = c.const_golden[user_codes]
        return pa.table(cols)

    @classmethod
    def from_arrow(cls, table: pa.Table, n_queries: int, n_users: int, grid: np.ndarray) -> EvalStats:
        """Inverse of `to_arrow` over the concatenated rows of every group."""
        q = table["q"].to_numpy()
        if q.size != n_queries or np.unique(q).size != n_queries:
            raise RuntimeError(f"Ray stats cover {np.unique(q).size} distinct of {n_queries} queries")
        order = np.argsort(q)
        u_sorted = table["u"].to_numpy()[order]
        users_seen, first = np.unique(u_sorted, return_index=True)  # one row (the first query) per user
        if users_seen.size != n_users:
            raise RuntimeError(f"Ray stats cover {users_seen.size} of {n_users} users")

        def col(name: str) -> np.ndarray:
            return table[name].to_numpy(zero_copy_only=False)[order]

        mean, std, bon_d = {}, {}, {}
        rho_q: dict[str, Correlation] = {}
        rho_u: dict[str, Correlation] = {}
        for name in table.column_names:
            kind, _, rest = name.partition("::")
            if kind == "mean":
                mean[rest], std[rest] = col(name), col(f"std::{rest}")
            elif kind == "bon":
                m, _, g = rest.rpartition("::")
                flat = table[name].combine_chunks().flatten().to_numpy().reshape(-1, grid.size)
                bon_d.setdefault(m, {})[g] = flat[order]
            elif kind == "rho_q":
                rho_q[rest] = Correlation(col(name), col(f"cs_q::{rest}"), col(f"cg_q::{rest}"))
            elif kind == "rho_u":
                rho_u[rest] = Correlation(col(name)[first], col(f"cs_u::{rest}")[first],
                                          col(f"cg_u::{rest}")[first])
        return cls(grid=grid, mean=mean, std=std, bon=bon_d, rho_q=rho_q, rho_u=rho_u)


def compute_stats(pools: bon.Pools, cfg: EvaluationConfig, grid_max: int | None = None) -> EvalStats:
    """Exact Best-of-N curves for every method and golden on N = 1..grid_max, plus ρ_q and ρ_u."""
    grid = np.arange(1, (grid_max or int(pools.sizes.max())) + 1)
    mean, std = {}, {}
    curves: dict[str, dict[str, np.ndarray]] = {"oracle": {}}
    for g, gold in pools.golden.items():
        mean[g], std[g], _ = theory.pool_moments(gold, pools.offsets)
        curves["oracle"][g] = bon.exact_bon(gold, None, pools.offsets, grid)
        for m, s in pools.scores.items():
            curves.setdefault(m, {})[g] = bon.exact_bon(gold, s, pools.offsets, grid)
    gold = pools.golden[cfg.golden]
    rho_q, rho_u = {}, {}
    for m, s in pools.scores.items():
        rho_q[m] = query_correlation(gold, s, pools.offsets, cfg.correlation)
        rho_u[m] = user_correlation(gold, s, pools.offsets, pools.user_codes, pools.n_users,
                                    kind=cfg.correlation, mode=cfg.user_rho, rho_q=rho_q[m])
    return EvalStats(grid=grid, mean=mean, std=std, bon=curves, rho_q=rho_q, rho_u=rho_u)
