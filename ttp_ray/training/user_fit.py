"""The per-user stage: fit a `UserBank` for every user at once, with per-user early stopping.

`fit_user_stage` is a pure torch function (no Ray): the Ray Tune sweep calls it inside trials, and
`user_stage.run_user_stage` calls it on every Ray Train worker for that worker's slice of the users.

Per user u with n_u training candidates the objective is

    (1/n_u) Σ_{i ∈ u} ℓ_i  +  (λ/n_u) ‖W_u‖²         ℓ = MSE (User-Det) or (β-)Gaussian NLL (User-Prob)

minimised by mini-batches that mix users (each sample carries its user's share of the prior). Under MSE the
data term of a user whose golden scores barely vary is tiny next to the prior, so W_u stays ≈ 0 and the user
inherits the global head's (uncorrelated) ranking; under NLL the learned σ²_u shrinks for that user and scales
its data term up by 1/σ²_u (Lemma 5.1, "gradient buffering").
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from ttp_ray.errors import TTPValidationError
from ttp_ray.reward.bank import LazyAdam, PersonalizedHead
from ttp_ray.reward.config import UserStageConfig
from ttp_ray.reward.heads import RewardHead
from ttp_ray.reward.losses import objective_loss
from ttp_ray.reward.pool import query_groups
from ttp_ray.training.threads import torch_threads

__all__ = ["UserStageResult", "check_head", "fit_user_stage", "sort_rows", "split_by_query"]

log = logging.getLogger(__name__)

ReportFn = Callable[[int, dict[str, float]], None]
_CHUNK = 65536  # rows per no-grad forward pass


def split_by_query(
    user_idx: np.ndarray, query_ids: Sequence[Any] | np.ndarray, val_fraction: float, seed: int = 0
) -> np.ndarray:
    """Boolean validation mask: a `val_fraction` share of each user's queries (all their candidates).

    A user with >= 2 queries keeps >= 1 query on each side; a user with one query has no validation rows.
    Which queries are held out depends only on (seed, query id), never on row order or on how users are
    numbered, so the global stage, every per-user worker slice and a rerun all draw the same split.
    """
    n = len(user_idx)
    if val_fraction <= 0 or n == 0:
        return np.zeros(n, dtype=bool)
    qs = np.asarray(query_ids, dtype=object).astype(str)
    df = pd.DataFrame({"u": np.asarray(user_idx), "q": qs})
    pairs = df.drop_duplicates().reset_index(drop=True)
    pairs["r"] = [_split_draw(seed, q) for q in pairs["q"]]
    pairs["rank"] = pairs.groupby("u")["r"].rank(method="first") - 1
    nq = pairs.groupby("u")["q"].transform("size")
    n_val = np.clip(np.round(val_fraction * nq), 1, None)
    n_val = np.where(nq >= 2, np.minimum(n_val, nq - 1), 0)
    val_pairs = pairs.loc[pairs["rank"] < n_val, ["u", "q"]]
    val = set(zip(val_pairs["u"].tolist(), val_pairs["q"].tolist(), strict=True))
    return np.fromiter(((a, b) in val for a, b in zip(df["u"].tolist(), qs.tolist(), strict=True)),
                       dtype=bool, count=n)


def _split_draw(seed: int, query_id: str) -> float:
    """A uniform [0, 1) number fixed by (seed, query id): the order-free draw of `split_by_query`."""
    h = hashlib.blake2b(f"{seed}\x1f{query_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


def sort_rows(table: pa.Table) -> pa.Table:
    """Rows in (user, query, candidate) order: Ray Data writes the feature cache in task-completion order,
    and the bank fit (and its float sums) must see the same rows in the same order on every run."""
    keys = [k for k in ("user_id", "query_id", "cand_idx") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys])


@dataclass
class UserStageResult:
    """The fitted bank (each user's best epoch) and what happened on the way."""

    model: PersonalizedHead
    best_epoch: np.ndarray  # (U,) 0 = the global head was never beaten on validation
    val_loss: np.ndarray  # (U,) best validation loss (NaN: no validation rows)
    n_train: np.ndarray  # (U,)
    n_val: np.ndarray  # (U,)
    history: list[dict[str, float]] = field(default_factory=list)

    @torch.no_grad()
    def predict(self, features: np.ndarray | torch.Tensor, user_idx: np.ndarray | torch.Tensor) -> tuple[
        np.ndarray, np.ndarray | None]:
        """(μ, σ² or None) for rows of features, user_idx < 0 = global head."""
        x = torch.tensor(np.asarray(features), dtype=torch.float32)
        u = torch.as_tensor(np.asarray(user_idx), dtype=torch.long)
        mus, vars_ = [], []
        for s in range(0, len(x), _CHUNK):
            out = self.model(x[s : s + _CHUNK], u[s : s + _CHUNK])
            mus.append(out.mu)
            if out.var is not None:
                vars_.append(out.var)
        mu = torch.cat(mus).numpy() if mus else np.zeros(0, np.float32)
        return mu, (torch.cat(vars_).numpy() if vars_ else None) if self.model.head.probabilistic else None


def check_head(head: RewardHead, cfg: UserStageConfig) -> None:
    want = cfg.head_config().model_dump()
    have = head.cfg.model_dump()
    for key in ("hidden_dim", "num_layers", "variance", "var_floor", "probabilistic"):
        if key == "hidden_dim" and have["num_layers"] == 0 and want["num_layers"] == 0:
            continue
        if want[key] != have[key]:
            raise TTPValidationError(
                f"user_stage.{key}={want[key]!r} does not match the global head ({have[key]!r}); the bank extends "
                "the global head, so train both with the same head settings",
                parameter=f"user_stage.{key}", value=want[key],
            )


def _group(ub: torch.Tensor, n_users: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`torch.unique(ub, return_inverse=True, return_counts=True)` in O(B + U) without a sort."""
    counts = torch.bincount(ub, minlength=n_users)
    present = counts > 0
    touched = torch.nonzero(present).squeeze(1)
    position = torch.cumsum(present, 0) - 1
    return touched, position[ub], counts[touched]


def _per_user_loss(loss: torch.Tensor, u: torch.Tensor, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    total = torch.zeros(n_users, dtype=torch.float64).index_add_(0, u, loss.double())
    count = torch.bincount(u, minlength=n_users).double()
    with np.errstate(invalid="ignore"):
        return (total / count).numpy(), count.numpy()


def _by_group(rows: torch.Tensor, grp: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`rows` with whole groups kept together, the groups in a random order (a mini-batch then holds whole
    queries, and a query cut by a batch boundary is two valid pieces); rows keep their order inside a group."""
    rank = torch.randperm(int(grp.max()) + 1 if len(grp) else 0, generator=gen)
    return rows[torch.argsort(rank[grp[rows]], stable=True)]


def _local(grp: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    """Group codes of `rows`, renumbered 0..G'−1 (None: pointwise objective)."""
    return None if grp is None else torch.unique(grp[rows], return_inverse=True)[1]


def fit_user_stage(
    features: np.ndarray | torch.Tensor,
    golden: np.ndarray | torch.Tensor,
    user_idx: np.ndarray | torch.Tensor,
    query_ids: Sequence[Any] | np.ndarray,
    global_head: RewardHead | None,
    cfg: UserStageConfig,
    report: ReportFn | None = None,
    *,
    n_users: int | None = None,
    eval_fn: Callable[[PersonalizedHead], dict[str, float]] | None = None,
    progress: bool = False,
) -> UserStageResult:
    """Fit per-user corrections of `global_head` for every user in one bank.

    Args:
        features: (N, D) float features (e.g. from the feature cache).
        golden: (N,) golden scores in [0, 1].
        user_idx: (N,) user row in the bank, 0..U-1.
        query_ids: (N,) query of each row; the validation split is by query within each user.
        global_head: the trained global head (Det for User-Det, Prob for User-Prob); frozen here. None = fit one
            first on the training split (handy for sweeps over the head architecture).
        cfg: the stage settings.
        report: optional `report(epoch, metrics)` called after every epoch (epoch 0 = the global head).
        n_users: bank rows (default max(user_idx) + 1).
        eval_fn: optional extra per-epoch metrics from the current model, merged into `report`'s metrics.
        progress: tqdm bar over epochs.

    Returns:
        UserStageResult whose model holds, for each user, the bank row of its best validation epoch.

    Example:
        >>> res = fit_user_stage(X, g, u, qids, head, UserStageConfig(epochs=20))
        >>> mu, var = res.predict(X_test, u_test)
    """
    n_rows = len(golden)
    width = (np.shape(features)[1] if np.ndim(features) == 2 else 1) + 2
    with torch_threads(min(n_rows, cfg.batch_size) * width * 2):
        x = torch.tensor(np.asarray(features), dtype=torch.float32)
        g = torch.tensor(np.asarray(golden), dtype=torch.float32)
        u = torch.as_tensor(np.asarray(user_idx), dtype=torch.long)
        if x.ndim != 2 or len(x) != len(g) or len(g) != len(u) or len(u) != len(query_ids):
            raise TTPValidationError(
                f"features (N, D), golden, user_idx and query_ids must have N rows; got {tuple(x.shape)}, {len(g)}, "
                f"{len(u)}, {len(query_ids)}", parameter="features",
            )
        if len(u) and int(u.min()) < 0:
            raise TTPValidationError("`user_idx` must be >= 0", parameter="user_idx", value=int(u.min()))
        if not torch.isfinite(g).all():
            raise TTPValidationError("`golden` has NaN/inf values", parameter="golden")
        n_users = int(n_users if n_users is not None else (int(u.max()) + 1 if len(u) else 1))
        if len(u) and int(u.max()) >= n_users:
            raise TTPValidationError(f"`user_idx` has {int(u.max())} but the bank has n_users={n_users} rows",
                                     parameter="n_users", value=n_users)
        torch.manual_seed(cfg.seed)
        val_mask = torch.tensor(split_by_query(u.numpy(), query_ids, cfg.val_fraction, cfg.seed))
        # the query (pool) of every row: the groups of the within-query objective
        grp = torch.as_tensor(query_groups(u.numpy(), query_ids)) if cfg.objective == "within_query" else None
        train_rows = torch.nonzero(~val_mask).squeeze(1)
        val_rows = torch.nonzero(val_mask).squeeze(1)

        if global_head is None:
            from ttp_ray.training.config import GlobalStageConfig
            from ttp_ray.training.global_fit import fit_global_head

            global_head = fit_global_head(
                x, g, val_mask.numpy(), cfg.head_config(), GlobalStageConfig(beta_nll=cfg.beta_nll, num_workers=0),
                groups=None if grp is None else grp.numpy(), objective=cfg.objective,
            ).head
        check_head(global_head, cfg)
        global_head.eval()
        model = PersonalizedHead(global_head, n_users, cfg.user_input)
        prob = global_head.probabilistic

        with torch.no_grad():  # the frozen head's parts, once per row
            parts = [model.base(x[s : s + _CHUNK]) for s in range(0, len(x), _CHUNK)]
            z = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, model.bank.in_dim)
            raw0 = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, global_head.n_out)

        n_train = torch.bincount(u[train_rows], minlength=n_users)
        n_val = torch.bincount(u[val_rows], minlength=n_users)
        # Per-sample share of each user's prior, and per-entry prior strengths (μ row vs variance row of W_u).
        inv_n = 1.0 / n_train.clamp_min(1).float()
        lam_var = cfg.prior_strength if cfg.prior_strength_var is None else cfg.prior_strength_var
        lam = torch.full((model.bank.n_out, model.bank.row_width), cfg.prior_strength)
        if prob:
            lam[1] = lam_var
        lam[:, : model.bank.in_dim] *= model.bank.v_scale**2  # the prior acts on the function V·z, not on V/√k
        lam_flat = lam.reshape(-1)
        weight = model.bank.weight
        opt = LazyAdam(weight, lr=cfg.lr)

        def val_losses() -> tuple[np.ndarray, dict[str, float]]:
            with torch.no_grad():
                out = model.from_base(z[val_rows], raw0[val_rows], u[val_rows])
                gv, qv = g[val_rows], _local(grp, val_rows)
                err = objective_loss(out.mu, None, gv, qv, objective=cfg.objective)
                crit = objective_loss(out.mu, out.var, gv, qv, objective=cfg.objective) if prob else err
                per_user, _ = _per_user_loss(crit, u[val_rows], n_users)
                metrics = {"val_mse": float(err.mean()) if len(err) else math.nan}
                if prob:
                    metrics["val_nll"] = float(crit.mean()) if len(crit) else math.nan
                    metrics["val_sigma"] = float(out.var.sqrt().mean()) if len(crit) else math.nan
            return per_user, metrics

        has_val = n_val.numpy() > 0
        best_val, m0 = val_losses()
        best = weight.detach().clone()
        best_epoch = np.zeros(n_users, dtype=np.int64)
        bad = np.zeros(n_users, dtype=np.int64)
        active = n_train.numpy() > 0
        history: list[dict[str, float]] = []

        def emit(epoch: int, metrics: dict[str, float]) -> None:
            if eval_fn is not None:
                metrics.update(eval_fn(model))
            history.append({"epoch": epoch, **metrics})
            log.debug("user stage epoch %d: %s", epoch, metrics)
            if report is not None:
                report(epoch, metrics)

        emit(0, {**m0, "train_loss": math.nan, "active_users": int(active.sum())})
        gen = torch.Generator().manual_seed(cfg.seed)
        bar = tqdm(range(1, cfg.epochs + 1), desc="user stage", unit="epoch", disable=not progress)
        for epoch in bar:
            lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))  # cosine decay to ~0
            opt.lr = lr
            act = torch.as_tensor(active)
            rows = train_rows[act[u[train_rows]]]
            if grp is None:
                rows = rows[torch.randperm(len(rows), generator=gen)]
            elif len(rows) > cfg.batch_size:  # one full batch: order cannot matter, and a fixed one frees the fit
                rows = _by_group(rows, grp, gen)  # of the seed to the last bit (float sums)
            # one gather per epoch; batches are then contiguous views
            ze, re, ge, ue = (t.index_select(0, rows) for t in (z, raw0, g, u))
            total, seen = 0.0, 0
            for s in range(0, len(rows), cfg.batch_size):
                b = slice(s, s + cfg.batch_size)
                ub = ue[b]
                touched, inverse, counts = _group(ub, n_users)
                # index_select, not [...]: its backward is an index_add (fast), not an accumulating index_put (slow)
                rows_u = weight.index_select(0, touched)  # (T, W): one gather per user in the batch ...
                out = model.from_rows(ze[b], re[b], rows_u.index_select(0, inverse))  # ... expanded to its samples
                # each sample carries its user's share of the prior: Σ_u count_u / n_u · Σ_j λ_j W_uj²
                prior = (counts * inv_n[touched] * (rows_u.pow(2) * lam_flat).sum(1)).sum()
                per_row = objective_loss(out.mu, out.var, ge[b], _local(grp, rows[b]), cfg.beta_nll, cfg.objective)
                loss = (per_row.sum() + prior) / len(ub)
                loss.backward()
                opt.step(touched)  # only the rows of users in this batch move
                if cfg.weight_decay > 0:
                    with torch.no_grad():
                        weight[touched] *= 1.0 - lr * cfg.weight_decay
                total += loss.item() * len(ub)
                seen += len(ub)
            per_user, metrics = val_losses()
            improved = has_val & active & (per_user < best_val)
            no_val = ~has_val & active  # nothing to stop on: keep the latest parameters
            keep = torch.as_tensor(improved | no_val)
            with torch.no_grad():
                best[keep] = weight[keep]
            best_val = np.where(improved, per_user, best_val)
            best_epoch[improved | no_val] = epoch
            bad = np.where(improved, 0, bad + (has_val & active))
            active &= ~(has_val & (bad >= cfg.patience))
            emit(epoch, {**metrics, "train_loss": total / max(seen, 1), "active_users": int(active.sum())})
            bar.set_postfix(loss=f"{total / max(seen, 1):.4g}", active=int(active.sum()))
            if not active.any():
                break
        with torch.no_grad():
            weight.copy_(best)
        return UserStageResult(
            model=model,
            best_epoch=best_epoch,
            val_loss=np.where(has_val, best_val, np.nan),
            n_train=n_train.numpy(),
            n_val=n_val.numpy(),
            history=history,
        )
