"""The sweep objective: train one user-stage configuration on cached features, score held-out queries by exact
Best-of-N, and say whether that configuration collapses users (α) or hacks queries (β).

Pure torch/numpy (no `ray` import): the Tune trainable in `sweep.py` wraps `train_and_score`, and so does the
re-training of the best and default configurations after a sweep, so both measure exactly the same thing.

Validation = each user's held-out pseudo-queries: `split_by_query(user_idx, query_ids, val_fraction, seed)`,
the very split `fit_user_stage` early-stops on. The global head is fit on the training split only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ttp_ray.errors import TTPValidationError
from ttp_ray.evaluation.bon import aggregate, exact_bon, random_bon
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.diagnostics import failure_modes, query_correlation, user_correlation
from ttp_ray.reward.config import UserStageConfig
from ttp_ray.reward.pool import query_groups
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.training.global_fit import fit_global_head
from ttp_ray.training.user_fit import UserStageResult, fit_user_stage, split_by_query

__all__ = ["GlobalOnly", "PoolScorer", "SweepData", "TrialOutcome", "bon_auc", "default_grid", "train_and_score"]

Report = Callable[[int, dict[str, float]], None]


@dataclass
class SweepData:
    """RM training candidates as arrays, query-contiguous (sorted by user, query, candidate).

    This is what goes into the object store once per sweep; every trial reads it zero-copy.
    """

    features: np.ndarray  # (N, D) float32
    golden: np.ndarray  # (N,) float64
    user_idx: np.ndarray  # (N,) int64, 0..U-1
    query_ids: np.ndarray  # (N,) str
    user_ids: list[str]  # (U,) bank row -> user_id

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.features.ndim != 2 or not (len(self.golden) == len(self.user_idx) == len(self.query_ids) == n):
            raise TTPValidationError(
                f"features (N, D), golden, user_idx and query_ids must have N rows; got {self.features.shape}, "
                f"{len(self.golden)}, {len(self.user_idx)}, {len(self.query_ids)}",
                parameter="features",
            )
        if n == 0:
            raise TTPValidationError("no RM training candidates to tune on", parameter="features")

    @classmethod
    def from_columns(
        cls,
        features: np.ndarray,
        golden: np.ndarray,
        user_ids: Sequence[str],
        query_ids: Sequence[str],
        cand_idx: Sequence[int] | None = None,
    ) -> SweepData:
        """Build from per-row columns in any order (rows are sorted query-contiguously here)."""
        users = np.asarray(user_ids, dtype=object).astype(str)
        queries = np.asarray(query_ids, dtype=object).astype(str)
        cands = np.arange(len(users)) if cand_idx is None else np.asarray(cand_idx)
        order = np.lexsort((cands, queries, users))
        uniq, codes = np.unique(users[order], return_inverse=True)
        return cls(
            features=np.ascontiguousarray(np.asarray(features, dtype=np.float32)[order]),
            golden=np.asarray(golden, dtype=np.float64)[order],
            user_idx=codes.astype(np.int64),
            query_ids=queries[order],
            user_ids=[str(u) for u in uniq],
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def val_mask(self, cfg: UserStageConfig) -> np.ndarray:
        return split_by_query(self.user_idx, self.query_ids, cfg.val_fraction, cfg.seed)

    def pool_sizes(self) -> np.ndarray:
        change = np.flatnonzero((self.query_ids[1:] != self.query_ids[:-1]) | (self.user_idx[1:] != self.user_idx[:-1]))
        offsets = np.concatenate([[0], change + 1, [len(self.query_ids)]])
        return np.diff(offsets)


def default_grid(max_n: int) -> list[int]:
    """1, 2, 4, … below `max_n`, then `max_n` itself (so the curve ends at the whole pool)."""
    grid, n = [], 1
    while n < max_n:
        grid.append(n)
        n *= 2
    return [*grid, max_n]


def bon_auc(ns: Sequence[int], curve: np.ndarray) -> float:
    """Mean utility over log N across the grid (trapezoid; the curve's value when the grid has one N)."""
    x = np.log(np.asarray(ns, dtype=np.float64))
    y = np.asarray(curve, dtype=np.float64)
    if len(x) == 1:
        return float(y[0])
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / (x[-1] - x[0]))


class PoolScorer:
    """Scores μ on query-contiguous candidate pools: exact BoN curve, its AUC, α, β and the mean correlations.

    Metric names (all prefixed, `val_` by default): `bon_n{N}` per grid point, `bon_max_n` (largest N),
    `bon_auc`, `alpha`, `beta`, `rho_u`, `rho_q`; `reference` holds the fixed `oracle_max_n` and `random`.
    `bank_idx` is each row's user row in the bank (-1: a user the bank does not know, scored by the global head).
    """

    def __init__(
        self,
        features: np.ndarray,
        golden: np.ndarray,
        bank_idx: np.ndarray,
        query_ids: np.ndarray,
        ns: Sequence[int] | None,
        eval_cfg: EvaluationConfig | None = None,
        *,
        prefix: str = "val_",
    ) -> None:
        if len(golden) == 0:
            raise TTPValidationError(f"no candidates to score ({prefix.rstrip('_')} split is empty)",
                                     parameter="features")
        self.cfg = eval_cfg or EvaluationConfig()
        self.prefix = prefix
        u, q = np.asarray(bank_idx), np.asarray(query_ids)
        change = np.flatnonzero((q[1:] != q[:-1]) | (u[1:] != u[:-1])) + 1
        self.offsets = np.concatenate([[0], change, [len(q)]]).astype(np.int64)
        _, self.user_codes = np.unique(u[self.offsets[:-1]], return_inverse=True)  # per query, 0..G-1
        self.n_users = int(self.user_codes.max()) + 1
        self.golden = np.asarray(golden, dtype=np.float64)
        self.x = torch.as_tensor(features)
        self.u = torch.as_tensor(u)
        smallest = int(np.diff(self.offsets).min())
        grid = default_grid(smallest) if ns is None else list(ns)
        if grid[-1] > smallest:
            raise TTPValidationError(
                f"n_grid goes up to N={grid[-1]} but the smallest {prefix.rstrip('_')} pool has {smallest} "
                "candidates; exact BoN needs N <= pool size (drop the larger N, or leave n_grid unset)",
                parameter="n_grid",
                value=list(ns or []),
            )
        self.ns = grid
        agg = self.cfg.aggregate
        oracle = aggregate(exact_bon(self.golden, None, self.offsets, [grid[-1]]), self.user_codes, agg)[0]
        rand = aggregate(random_bon(self.golden, self.offsets, [1]), self.user_codes, agg)[0]
        self.reference = {f"{prefix}oracle_max_n": float(oracle), f"{prefix}random": float(rand)}

    @classmethod
    def validation(
        cls, data: SweepData, val_mask: np.ndarray, ns: Sequence[int] | None, eval_cfg: EvaluationConfig | None = None
    ) -> PoolScorer:
        """The held-out pseudo-queries of `data` (`val_mask`, from `split_by_query`)."""
        rows = np.flatnonzero(val_mask)
        if rows.size == 0:
            raise TTPValidationError(
                "the validation split is empty: users need >= 2 pseudo-queries and user_stage.val_fraction > 0",
                parameter="user_stage.val_fraction",
            )
        return cls(data.features[rows], data.golden[rows], data.user_idx[rows], data.query_ids[rows], ns, eval_cfg)

    @classmethod
    def pools(
        cls, pools: SweepData, bank_users: Sequence[str], ns: Sequence[int] | None,
        eval_cfg: EvaluationConfig | None = None, *, prefix: str = "test_",
    ) -> PoolScorer:
        """Other pools (e.g. the eval pools of the test queries), users mapped onto the bank's rows."""
        row_of = {u: i for i, u in enumerate(bank_users)}
        bank_idx = np.array([row_of.get(u, -1) for u in pools.user_ids], dtype=np.int64)[pools.user_idx]
        return cls(pools.features, pools.golden, bank_idx, pools.query_ids, ns, eval_cfg, prefix=prefix)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module) -> np.ndarray:
        was_training = model.training
        model.eval()
        mu = model(self.x, self.u).mu.double().numpy()
        model.train(was_training)
        return mu

    def __call__(self, mu: np.ndarray) -> dict[str, float]:
        c, p = self.cfg, self.prefix
        curve = aggregate(exact_bon(self.golden, mu, self.offsets, self.ns), self.user_codes, c.aggregate)
        rho_q = query_correlation(self.golden, mu, self.offsets, c.correlation)
        rho_u = user_correlation(self.golden, mu, self.offsets, self.user_codes, self.n_users, kind=c.correlation,
                                 mode=c.user_rho, rho_q=rho_q)
        fm = failure_modes(rho_q, rho_u, self.user_codes, collapse_threshold=c.collapse_threshold,
                           hacking_threshold=c.hacking_threshold)
        out = {f"{p}bon_n{n}": float(v) for n, v in zip(self.ns, curve, strict=True)}
        out.update({
            f"{p}bon_max_n": float(curve[-1]),
            f"{p}bon_auc": bon_auc(self.ns, curve),
            f"{p}alpha": _finite(fm.alpha),
            f"{p}beta": _finite(fm.beta),
            f"{p}rho_u": _finite(fm.mean_rho_u),
            f"{p}rho_q": _finite(fm.mean_rho_q),
        })
        return out

    def score_model(self, model: torch.nn.Module) -> dict[str, float]:
        return self(self.predict(model))


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else math.nan


@dataclass
class TrialOutcome:
    result: UserStageResult  # .model: the fitted bank (each user's best epoch) over the frozen global head
    final: dict[str, float]  # validation metrics of that model
    history: list[dict[str, float]]  # one dict per user-stage epoch >= 1


def train_and_score(
    data: SweepData,
    cfg: UserStageConfig,
    *,
    global_cfg: GlobalStageConfig | None = None,
    ns: Sequence[int] | None = None,
    eval_cfg: EvaluationConfig | None = None,
    report: Report | None = None,
) -> TrialOutcome:
    """Fit the global head (training split) and the user bank with `cfg`; score validation BoN every epoch.

    Args:
        data: the cached RM training features.
        cfg: the user-stage configuration under test (its `val_fraction`/`seed` define the validation split).
        global_cfg: optimisation of the global head (architecture and β come from `cfg`, as in `ttp train`).
        ns: validation N grid (None: 1, 2, 4, … up to the smallest validation pool).
        report: called as `report(epoch, metrics)` after each user-stage epoch >= 1; metrics include the
            global head's validation numbers as `global_val_*`.

    Returns:
        TrialOutcome with the fitted result, the final model's metrics and the per-epoch history.
    """
    val_mask = data.val_mask(cfg)
    scorer = PoolScorer.validation(data, val_mask, ns, eval_cfg)
    golden = data.golden.astype(np.float32)
    gcfg = (global_cfg or GlobalStageConfig(num_workers=0)).model_copy(update={"beta_nll": cfg.beta_nll})
    head = fit_global_head(data.features, golden, val_mask, cfg.head_config(), gcfg, seed=cfg.seed,
                           groups=query_groups(data.user_idx, data.query_ids), objective=cfg.objective).head
    base = {f"global_{k}": v for k, v in scorer.score_model(GlobalOnly(head)).items()}
    history: list[dict[str, float]] = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 0:  # the global head alone: already in `base`
            return
        row = {"epoch": float(epoch), **{k: float(v) for k, v in metrics.items()}, **base, **scorer.reference}
        history.append(row)
        if report is not None:
            report(epoch, row)

    result = fit_user_stage(
        data.features, golden, data.user_idx, data.query_ids, head, cfg,
        report=on_epoch, n_users=data.n_users, eval_fn=scorer.score_model,
    )
    final = {**scorer.score_model(result.model), **base, **scorer.reference,
             "epochs_run": float(len(history)), "mean_best_epoch": float(np.mean(result.best_epoch))}
    return TrialOutcome(result=result, final=final, history=history)


class GlobalOnly(torch.nn.Module):
    """Adapter so the scorer can call a bare global head with the bank's (x, user_idx) signature."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor, user_idx: torch.Tensor) -> Any:
        return self.head(x)
