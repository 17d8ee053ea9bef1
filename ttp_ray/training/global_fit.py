"""The global head trained in-process on cached features (tests, sweeps, the no-Ray helper, and the user
stage when it is given no global head), plus the row orders and metrics the Ray Train loop shares with it.

Pure torch: no Ray. The same objective runs distributed in `global_stage.run_global_stage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ttp_ray.reward.config import HeadConfig
from ttp_ray.reward.heads import RewardHead, raw_to_mu_var
from ttp_ray.reward.losses import gaussian_nll, mse, objective_loss
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.training.threads import torch_threads

__all__ = ["GlobalFitResult", "fit_global_head", "group_order", "local_groups", "new_head", "val_metrics"]


@dataclass
class GlobalFitResult:
    """The head at its best validation epoch (the last one without validation rows) and the per-epoch record."""

    head: RewardHead
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    backbone_state: dict[str, torch.Tensor] | None = None  # LoRA / fine-tuned backbone weights
    metrics: dict[str, Any] = field(default_factory=dict)  # last reported metrics (Ray Train runs)


def val_metrics(raw: torch.Tensor, g: torch.Tensor, cfg: HeadConfig, group: torch.Tensor | None = None,
                objective: str = "pointwise") -> dict[str, float]:
    """Validation MSE and, for a Prob head, NLL and mean σ; `val_loss` (NLL, else MSE) is what early stopping
    reads. Under the within-query objective each query's level is profiled out first (`group`)."""
    out = raw_to_mu_var(raw, cfg)
    if objective == "pointwise":
        m = {"val_mse": float(mse(out.mu, g).mean())}
        nll = gaussian_nll(out.mu, out.var, g) if out.var is not None else None
    else:
        m = {"val_mse": float(objective_loss(out.mu, None, g, group, objective=objective).mean())}
        nll = objective_loss(out.mu, out.var, g, group, objective=objective) if out.var is not None else None
    if out.var is not None:
        m["val_nll"] = float(nll.mean())
        m["val_sigma"] = float(out.var.sqrt().mean())
    m["val_loss"] = m.get("val_nll", m["val_mse"])
    return m


def new_head(x_train: torch.Tensor, g_train: torch.Tensor, head_cfg: HeadConfig, seed: int = 0) -> RewardHead:
    """A head standardised on the training features and started at the golden mean / variance."""
    torch.manual_seed(seed)
    head = RewardHead(x_train.shape[1], head_cfg)
    head.fit_normalizer(x_train)
    head.init_output(float(g_train.mean()), float(g_train.var(unbiased=False)) if len(g_train) > 1 else None)
    return head


def fit_global_head(
    features: np.ndarray | torch.Tensor,
    golden: np.ndarray | torch.Tensor,
    val_mask: np.ndarray | None,
    head_cfg: HeadConfig,
    cfg: GlobalStageConfig,
    *,
    seed: int = 0,
    report: Any = None,
    progress: bool = False,
    groups: np.ndarray | None = None,
    objective: str = "pointwise",
) -> GlobalFitResult:
    """Train a global head in-process (AdamW, mini-batches, early stopping on the validation rows).

    Args:
        features: (N, D) cached features. golden: (N,) targets.
        val_mask: rows held out for early stopping (None: no early stopping, last epoch kept).
        head_cfg: architecture (Det when `probabilistic=False`). cfg: epochs, lr, batch size, patience, β.
        groups: (N,) query (pool) code of every row; needed by `objective="within_query"` (then batches hold
            whole queries).
        objective: `UserStageConfig.objective` ("pointwise" | "within_query").
    """
    x = torch.tensor(np.asarray(features), dtype=torch.float32)
    g = torch.tensor(np.asarray(golden), dtype=torch.float32)
    vm = torch.tensor(np.asarray(val_mask) if val_mask is not None else np.zeros(len(x), dtype=bool))
    tr, va = torch.nonzero(~vm).squeeze(1), torch.nonzero(vm).squeeze(1)
    if len(tr) == 0:
        raise ValueError("fit_global_head: no training rows (every row is in the validation split)")
    if objective != "pointwise" and groups is None:
        raise ValueError(f"fit_global_head: objective={objective!r} needs `groups` (the query of every row)")
    grp = torch.as_tensor(np.asarray(groups), dtype=torch.long) if objective != "pointwise" else None
    with torch_threads(cfg.batch_size * x.shape[1] * 8):
        return _fit_global_head(x, g, tr, va, head_cfg, cfg, seed, report, progress, grp, objective)


def group_order(n: int, group: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """A random order of n rows; with `group`, whole groups stay together (groups in random order, rows in
    their order), so mini-batches hold whole queries for the within-query objective."""
    if group is None:
        return torch.randperm(n, generator=gen)
    rank = torch.randperm(int(group.max()) + 1 if n else 0, generator=gen)
    return torch.argsort(rank[group], stable=True)


def local_groups(group: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    """Group codes of rows `idx`, renumbered 0..G'−1 (None: pointwise)."""
    return None if group is None else torch.unique(group[idx], return_inverse=True)[1]


def _fit_global_head(x: torch.Tensor, g: torch.Tensor, tr: torch.Tensor, va: torch.Tensor, head_cfg: HeadConfig,
                     cfg: GlobalStageConfig, seed: int, report: Any, progress: bool, grp: torch.Tensor | None,
                     objective: str) -> GlobalFitResult:
    head = new_head(x[tr], g[tr], head_cfg, seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    best_val, best_epoch, bad = math.inf, 0, 0
    history: list[dict[str, float]] = []
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="global head", unit="epoch", disable=not progress):
        head.train()
        perm = tr[group_order(len(tr), None if grp is None else grp[tr], gen)]
        total = 0.0
        for s in range(0, len(perm), cfg.batch_size):
            b = perm[s : s + cfg.batch_size]
            out = head(x[b])
            loss = objective_loss(out.mu, out.var, g[b], local_groups(grp, b), cfg.beta_nll, objective).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        head.eval()
        m: dict[str, float] = {"epoch": epoch, "train_loss": total / len(perm)}
        if len(va):
            with torch.no_grad():
                m.update(val_metrics(head.raw(x[va]), g[va], head_cfg, local_groups(grp, va), objective))
        history.append(m)
        if report is not None:
            report(epoch, m)
        val = m.get("val_loss", -epoch)  # no validation: the last epoch wins
        if val < best_val:
            best_val, best_epoch, bad = val, epoch, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return GlobalFitResult(head=head, best_epoch=best_epoch, history=history)
