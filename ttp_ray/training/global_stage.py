"""The global stage: backbone (frozen | LoRA | full) + the Global-Det / Global-Prob head.

`fit_global_head` is the in-process trainer on cached features (tests, sweeps, the no-Ray helper).
`run_global_stage` runs the same objective on Ray Train: a `TorchTrainer` whose workers wrap the model with
`deepspeed.initialize` (ZeRO stage from config; DS_ACCELERATOR=cpu on CPU), read their shard of a Ray Dataset,
checkpoint every epoch (safetensors, see `checkpoint.py`) and resume from `ray.train.get_checkpoint()` after a
worker failure (`FailureConfig(max_failures)`). Each epoch's checkpoint carries the sha256 of its files; a
restart whose latest checkpoint does not match (a crash or a full disk mid-upload) resumes from the newest
older epoch that does (`CheckpointConfig(num_to_keep)` keeps them), or from scratch when none does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ttp_ray.errors import DataError
from ttp_ray.reward.config import FeatureConfig, HeadConfig
from ttp_ray.reward.heads import RewardHead, raw_to_mu_var
from ttp_ray.reward.losses import gaussian_nll, mse, objective_loss
from ttp_ray.reward.pool import query_groups
from ttp_ray.training.checkpoint import (
    load_optimizer_state,
    load_tensors,
    save_optimizer_state,
    save_tensors,
)
from ttp_ray.training.config import GlobalStageConfig

__all__ = ["FaultInjection", "GlobalFitResult", "GlobalModel", "GlobalStageResult", "fit_global_head",
           "run_global_stage"]

log = logging.getLogger(__name__)


_CHECKED = ("model.safetensors", "best.safetensors", "state.json")  # rank 0's files, covered by digest.json
# epoch_NNNN for the first attempt, epoch_NNNN-aKK after a restart: a run that fell back to an older epoch
# re-reports the epochs after it, and Ray Train must not see a new checkpoint under a path it already manages
_EPOCH_DIR = re.compile(r"epoch_\d{4}(-a\d{2})?$")


def _digest(d: Path) -> dict[str, str]:
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in _CHECKED}


def _load_epoch(d: Path, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor], Path]:
    """(model state, loop state, best state, a private copy of this rank's optimizer files) of one epoch's
    checkpoint folder; DataError when a file is missing or does not match the digest written with it."""
    want = json.loads((d / "digest.json").read_text())
    bad = sorted(f for f, h in _digest(d).items() if want.get(f) != h)  # the files are hashed once
    if bad:
        raise DataError(f"checkpoint files {bad} do not match their digest", file=str(d))
    model_state, best = load_tensors(d / "model.safetensors"), load_tensors(d / "best.safetensors")
    state = json.loads((d / "state.json").read_text())
    optim_dir = Path(tempfile.mkdtemp(prefix="ttp-optim-"))
    for f in d.glob(f"optim-rank{rank}.*"):
        (optim_dir / f.name).write_bytes(f.read_bytes())
    return model_state, state, best, optim_dir


def _restore(ckpt: Any, rank: int) -> tuple[tuple[Any, ...] | None, list[str]]:
    """Load the newest intact checkpoint at or before `ckpt` (Ray Train's latest): returns its contents (or
    None: start from scratch) and the names of the epochs skipped as corrupt."""
    import pyarrow.fs as pafs
    import ray.train

    path = ckpt.path.rstrip("/")
    parent, latest = path.rsplit("/", 1)
    infos = ckpt.filesystem.get_file_info(pafs.FileSelector(parent))
    older = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and _EPOCH_DIR.match(i.base_name) and i.base_name < latest), reverse=True)
    skipped = []
    for name in [latest, *older]:
        try:
            with ray.train.Checkpoint(f"{parent}/{name}", ckpt.filesystem).as_directory() as d:
                return _load_epoch(Path(d), rank), skipped
        except (OSError, ValueError, DataError, json.JSONDecodeError) as e:  # safetensors raises ValueError-likes
            log.warning("rank %d: checkpoint %s unusable (%s); trying an older one", rank, name, e)
            skipped.append(name)
    return None, skipped


@dataclass
class GlobalFitResult:
    head: RewardHead
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    backbone_state: dict[str, torch.Tensor] | None = None  # LoRA / fine-tuned backbone weights
    metrics: dict[str, Any] = field(default_factory=dict)  # last reported metrics (Ray Train runs)


def _val_metric(raw: torch.Tensor, g: torch.Tensor, cfg: HeadConfig, group: torch.Tensor | None = None,
                objective: str = "pointwise") -> dict[str, float]:
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
    from ttp_ray.training.threads import torch_threads

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
                m.update(_val_metric(head.raw(x[va]), g[va], head_cfg, local_groups(grp, va), objective))
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


# ---------------------------------------------------------------------------------------------------------------
# Ray Train + DeepSpeed
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FaultInjection:
    """Testing hook: `rank` exits with `os._exit(1)` early in `epoch` on its first attempt.

    The first attempt is detected by the absence of `marker` (a file the failing worker creates before dying).
    The worker dies `delay_s` seconds into the epoch: Ray Train's controller collects reports when it polls
    the workers (every 2 s), so a crash right after a report can lose that report, and the run then resumes
    one epoch earlier (still from a checkpoint). The delay makes the resume point deterministic for tests.
    """

    marker: str
    epoch: int
    rank: int = 1
    delay_s: float = 8.0
    corrupt_latest: bool = False  # also overwrite the newest epoch checkpoint's model file before dying


class GlobalModel(nn.Module):
    """What DeepSpeed wraps: one or more global heads (e.g. Det and Prob, trained side by side on the same
    batches), plus the backbone when it trains (LoRA/full) on text batches."""

    def __init__(self, heads: dict[str, RewardHead], backbone: Any = None,
                 feature_cfg: FeatureConfig | None = None) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.backbone = backbone
        self.feature_cfg = feature_cfg

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.backbone is None:
            return batch["features"]
        from ttp_ray.reward.features import STATIC_SCALARS, assemble

        fc, bb = self.feature_cfg, self.backbone
        e_c = bb.pooled(bb.tokenize(list(batch["text"]), fc.max_cand_tokens))
        e_q = bb.pooled(bb.tokenize(list(batch["query_text"]), fc.max_query_tokens))
        scal = batch["scalars"]
        return assemble(fc.resolved_blocks(), cu=batch["cu"],
                        scalars={k: scal[:, i] for i, k in enumerate(STATIC_SCALARS)}, e_c=e_c, e_q=e_q)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = self.features(batch)
        return {name: head.raw(x) for name, head in self.heads.items()}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"heads.{k}": v.detach().clone() for k, v in self.heads.state_dict().items()}
        if self.backbone is not None:
            state.update({f"backbone.{k}": v.clone() for k, v in self.backbone.trainable_state_dict().items()})
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")})
        if self.backbone is not None:
            self.backbone.load_trainable_state_dict(
                {k[9:]: v for k, v in state.items() if k.startswith("backbone.")})


def _batch_to_torch(batch: dict[str, np.ndarray], golden: str) -> dict[str, Any]:
    def mat(col: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.stack(col) if col.dtype == object else col, dtype=torch.float32)

    out: dict[str, Any] = {"golden": torch.tensor(batch[golden], dtype=torch.float32)}
    if "user_id" in batch and "query_id" in batch:  # what orders the rows, and the within-query groups
        cand = batch["cand_idx"] if "cand_idx" in batch else np.zeros(len(batch[golden]), dtype=np.int64)
        out["_key"] = list(zip(batch["user_id"].tolist(), batch["query_id"].tolist(), cand.tolist(), strict=True))
    if "features" in batch:
        out["features"] = mat(batch["features"])
    else:
        out["text"], out["query_text"] = list(batch["text"]), list(batch["query_text"])
        out["cu"], out["scalars"] = mat(batch["cu"]), mat(batch["scalars"])
    return out


def _materialize(shard: Any, golden: str) -> dict[str, Any]:
    """Pull a worker's dataset shard into memory once (cached features are small; re-streaming the shard
    every epoch costs a Ray Data execution per epoch), rows in (user, query, candidate) order.

    Ray Data hands a shard's blocks over in the order its tasks finish, so without the sort the same rows meet
    the seeded permutation in another order on every run (measured: two runs of one config differed by up to
    2e-4 in μ). `group` is each row's query within the shard (the within-query objective's groups).
    """
    parts = [_batch_to_torch(b, golden) for b in shard.iter_batches(batch_size=4096, batch_format="numpy")]
    if not parts:
        return {"golden": torch.zeros(0)}
    out: dict[str, Any] = {}
    for k in parts[0]:
        out[k] = torch.cat([p[k] for p in parts]) if torch.is_tensor(parts[0][k]) else sum((p[k] for p in parts), [])
    keys = out.pop("_key", None)
    if keys is not None:
        order = sorted(range(len(keys)), key=keys.__getitem__)
        out = _rows(out, torch.tensor(order, dtype=torch.long))
        keys = [keys[i] for i in order]
        out["group"] = torch.as_tensor(query_groups([k[0] for k in keys], [k[1] for k in keys]))
    return out


def _rows(data: dict[str, Any], idx: torch.Tensor) -> dict[str, Any]:
    return {k: v[idx] if torch.is_tensor(v) else [v[i] for i in idx.tolist()] for k, v in data.items()}


def _build_model(loop_cfg: dict[str, Any]) -> GlobalModel:
    gcfg = GlobalStageConfig.model_validate(loop_cfg["global_cfg"])
    torch.manual_seed(loop_cfg["seed"])
    heads = {}
    for name, hc in loop_cfg["head_cfgs"].items():
        head = RewardHead(loop_cfg["in_dim"], HeadConfig.model_validate(hc))
        with torch.no_grad():
            head.x_mean.copy_(torch.as_tensor(loop_cfg["x_mean"]))
            head.x_std.copy_(torch.as_tensor(loop_cfg["x_std"]))
        head.init_output(loop_cfg["g_mean"], loop_cfg["g_var"])
        heads[name] = head
    if gcfg.backbone_mode == "frozen":
        return GlobalModel(heads)
    from ttp_ray.reward.backbone import Backbone

    fcfg = FeatureConfig.model_validate(loop_cfg["feature_cfg"])
    backbone = Backbone(fcfg.backbone, pooling=fcfg.pooling)
    if gcfg.backbone_mode == "lora":
        backbone.apply_lora(gcfg.lora_r, gcfg.lora_alpha, gcfg.lora_dropout, gcfg.lora_target_modules)
    else:
        backbone.unfreeze()
    backbone.model.train()
    return GlobalModel(heads, backbone, fcfg)


def _param_groups(model: GlobalModel, gcfg: GlobalStageConfig) -> list[dict[str, Any]]:
    groups = [{"params": [p for p in model.heads.parameters() if p.requires_grad], "lr": gcfg.lr}]
    if model.backbone is not None:
        groups.append({"params": [p for p in model.backbone.parameters() if p.requires_grad],
                       "lr": gcfg.backbone_lr})
    return groups


def _ds_config(gcfg: GlobalStageConfig, world: int) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": gcfg.batch_size,
        "train_batch_size": gcfg.batch_size * max(world, 1),
        "gradient_accumulation_steps": 1,
        # Heads on frozen features are independent problems: a global-norm clip would couple Det and Prob (and
        # the in-process trainer does not clip). A shared tuned backbone keeps the usual clip.
        "gradient_clipping": 1.0 if gcfg.backbone_mode != "frozen" else 0.0,
        "zero_optimization": {"stage": gcfg.zero_stage},
        "zero_allow_untested_optimizer": True,  # a client torch AdamW (no fused CPU op to build)
        "steps_per_print": 1 << 30,
    }


def _losses(raws: dict[str, torch.Tensor], g: torch.Tensor, head_cfgs: dict[str, HeadConfig],
            beta: float, active: set[str] | None = None, group: torch.Tensor | None = None,
            objective: str = "pointwise") -> torch.Tensor:
    """Sum of the heads' mean losses (only `active` heads: a head that early-stopped trains no further)."""
    total = torch.zeros(())
    for name, raw in raws.items():
        if active is not None and name not in active:
            continue
        out = raw_to_mu_var(raw, head_cfgs[name])
        total = total + objective_loss(out.mu, out.var, g, group, beta, objective).mean()
    return total


def _global_train_loop(loop_cfg: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DeepSpeed over all global heads, per-epoch safetensors checkpoints."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    gcfg = GlobalStageConfig.model_validate(loop_cfg["global_cfg"])
    head_cfgs = {k: HeadConfig.model_validate(v) for k, v in loop_cfg["head_cfgs"].items()}
    model = _build_model(loop_cfg)
    # Early stopping: per head on its own validation loss when the heads share nothing (frozen features), so
    # Det and Prob each keep their own best epoch (as `fit_global_head` does); on their summed loss when they
    # share a tuned backbone.
    per_head = gcfg.backbone_mode == "frozen"
    units = list(head_cfgs) if per_head else ["all"]
    state: dict[str, Any] = {"epoch": 0, "history": [], "attempts": 0,
                             "stop": {u: {"best_val": math.inf, "best_epoch": 0, "bad": 0} for u in units}}
    restored_from, optim_dir, skipped = -1, None, []
    ckpt = ray.train.get_checkpoint()
    restored = None
    if ckpt is not None:  # a restart after a failure: continue from the newest intact reported epoch
        restored, skipped = _restore(ckpt, rank)
    if restored is not None:
        model_state, state, best, optim_dir = restored
        model.load_trainable_state(model_state)
        restored_from = int(state["epoch"])
    else:
        if ckpt is not None:  # a restart with no intact checkpoint: from scratch, but counted as a restart
            state["attempts"] = 1
        best = model.trainable_state()
    state["attempts"] = int(state.get("attempts", 0)) + 1

    optimizer = torch.optim.AdamW(_param_groups(model, gcfg), weight_decay=gcfg.weight_decay)
    engine = None
    if gcfg.deepspeed and torch.distributed.is_available() and torch.distributed.is_initialized():
        import deepspeed

        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                       config=_ds_config(gcfg, world))
    base_opt = getattr(optimizer, "optimizer", optimizer)  # ZeRO-1/2 wrap the client optimizer
    if optim_dir is not None and not load_optimizer_state(base_opt, optim_dir, f"optim-rank{rank}"):
        log.warning("rank %d: no optimizer state in the checkpoint; AdamW moments restart", rank)

    golden, objective = loop_cfg["golden"], loop_cfg.get("objective", "pointwise")
    train = _materialize(ray.train.get_dataset_shard("train"), golden)
    val = _materialize(ray.train.get_dataset_shard("val"), golden) if loop_cfg["has_val"] else None
    # the within-query objective's groups: the queries of this worker's shard (a query split across workers is
    # two valid pieces); kept out of the batches the model reads
    groups = {name: d.pop("group", None) for name, d in (("train", train), ("val", val)) if d is not None}
    train_group, val_group = (groups.get("train"), groups.get("val")) if objective != "pointwise" else (None, None)
    n = len(train["golden"])
    fault = loop_cfg.get("fault")
    start = int(state["epoch"]) + 1
    for epoch in range(start, gcfg.epochs + 1):
        if fault and rank == fault["rank"] and epoch == fault["epoch"] and not os.path.exists(fault["marker"]):
            Path(fault["marker"]).write_text(f"rank {rank} died at epoch {epoch}\n")
            time.sleep(fault["delay_s"])
            if fault.get("corrupt_latest"):  # a crash that also left the last checkpoint half-written
                newest = max(Path(fault["storage_dir"]).glob("epoch_*"))
                (newest / "model.safetensors").write_bytes(b"\0" * 64)
            os._exit(1)  # a hard crash: no cleanup, no report
        model.train()
        gen = torch.Generator().manual_seed(loop_cfg["seed"] * 1000 + epoch)  # same step count on every rank
        perm = group_order(n, train_group, gen)
        total = 0.0
        for s in range(0, n, gcfg.batch_size):
            idx = perm[s : s + gcfg.batch_size]
            tb = _rows(train, idx)
            raws = engine(tb) if engine is not None else model(tb)
            active = {h for h in head_cfgs if not per_head or state["stop"][h]["bad"] < gcfg.patience}
            loss = _losses(raws, tb["golden"], head_cfgs, gcfg.beta_nll, active, local_groups(train_group, idx),
                           objective)
            if engine is not None:
                engine.backward(loss)
                engine.step()
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += loss.item() * len(tb["golden"])
        model.eval()
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(n, 1)}
        if val is not None and len(val["golden"]):
            with torch.no_grad():
                raws = model(val)
            val_loss = 0.0
            for name, raw in raws.items():
                m = _val_metric(raw, val["golden"], head_cfgs[name],
                                local_groups(val_group, torch.arange(len(val["golden"]))), objective)
                metrics.update({f"{name}/{k}": v for k, v in m.items()})
                val_loss += m["val_loss"]
            metrics["val_loss"] = val_loss  # sum over heads (the criterion when they share a backbone)
        current = model.trainable_state()
        for u, st in state["stop"].items():
            if st["bad"] >= gcfg.patience:
                continue  # this head stopped: its best weights are kept
            crit = metrics.get("val_loss" if u == "all" else f"{u}/val_loss", -epoch)  # no val rows: last epoch
            if crit < st["best_val"]:
                st.update(best_val=crit, best_epoch=epoch, bad=0)
                prefix = "" if u == "all" else f"heads.{u}."
                best.update({k: v for k, v in current.items() if k.startswith(prefix)})
            else:
                st["bad"] += 1
        state["epoch"] = epoch
        state["best_epoch"] = max(st["best_epoch"] for st in state["stop"].values())
        state["history"].append({k: float(v) for k, v in metrics.items()})
        stop = all(st["bad"] >= gcfg.patience for st in state["stop"].values()) or epoch == gcfg.epochs
        metrics.update({f"{u}/best_epoch": st["best_epoch"] for u, st in state["stop"].items() if u != "all"})
        metrics.update(start_epoch=start, restored_from=restored_from, skipped_checkpoints=",".join(skipped),
                       attempts=state["attempts"],
                       best_epoch=state["best_epoch"], done=stop, world_size=world,
                       zero_stage=gcfg.zero_stage if engine is not None else -1)
        with tempfile.TemporaryDirectory() as d:
            save_optimizer_state(base_opt, Path(d), f"optim-rank{rank}")
            if rank == 0:
                save_tensors(model.trainable_state(), Path(d) / "model.safetensors")
                save_tensors(best, Path(d) / "best.safetensors")
                (Path(d) / "state.json").write_text(json.dumps(state))
                (Path(d) / "digest.json").write_text(json.dumps(_digest(Path(d))))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"epoch_{epoch:04d}" + (f"-a{state['attempts']:02d}"
                                                                          if state["attempts"] > 1 else ""))
        if stop:
            break


@dataclass
class GlobalStageResult:
    heads: dict[str, RewardHead]
    best_epoch: int
    history: list[dict[str, float]]
    backbone_state: dict[str, torch.Tensor] | None
    metrics: dict[str, Any]


def run_global_stage(
    train_ds: Any,
    val_ds: Any | None,
    *,
    head_cfgs: dict[str, HeadConfig],
    in_dim: int,
    x_mean: np.ndarray,
    x_std: np.ndarray,
    g_mean: float,
    g_var: float,
    cfg: GlobalStageConfig,
    feature_cfg: FeatureConfig,
    golden: str,
    storage_path: str | Path,
    name: str,
    seed: int = 0,
    fault: FaultInjection | None = None,
    objective: str = "pointwise",
) -> GlobalStageResult:
    """Train the global heads (e.g. {"global-det": Det, "global-prob": Prob}) side by side on Ray Train.

    `train_ds`/`val_ds` are Ray Datasets with a `golden` column and either `features` (frozen backbone) or
    `query_text`, `text`, `cu`, `scalars` (LoRA/full backbone, shared by the heads). Every worker wraps the model
    with `deepspeed.initialize` (`cfg.zero_stage`), checkpoints each epoch (safetensors: weights, best weights,
    its AdamW shard; JSON: epoch, early-stopping state) and, after a worker failure, resumes from
    `ray.train.get_checkpoint()` (`FailureConfig(max_failures=cfg.max_failures)`). On frozen features each head
    early-stops on its own validation loss and keeps its own best epoch; heads sharing a tuned backbone stop on
    the sum of their losses.
    """
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ttp_ray.ray_utils import train_worker_cpus, worker_env

    loop_cfg = {
        "head_cfgs": {k: v.model_dump() for k, v in head_cfgs.items()},
        "global_cfg": cfg.model_dump(),
        "feature_cfg": feature_cfg.model_dump(),
        "in_dim": int(in_dim),
        "x_mean": np.asarray(x_mean, dtype=np.float32).tolist(),
        "x_std": np.asarray(x_std, dtype=np.float32).tolist(),
        "g_mean": float(g_mean),
        "g_var": float(g_var),
        "golden": golden,
        "seed": seed,
        "objective": objective,
        "has_val": val_ds is not None,
        "fault": {**fault.__dict__, "storage_dir": str(Path(storage_path).resolve() / name)} if fault else None,
    }
    datasets = {"train": train_ds} | ({"val": val_ds} if val_ds is not None else {})
    trainer = TorchTrainer(
        _global_train_loop,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": train_worker_cpus(cfg.num_workers)}),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),  # Ray Train needs a URI or an absolute path
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            worker_runtime_env={"env_vars": worker_env()},
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    with result.checkpoint.as_directory() as d:
        best = load_tensors(Path(d) / "best.safetensors")
        state = json.loads((Path(d) / "state.json").read_text())
    heads = {}
    for hname, hc in head_cfgs.items():
        head = RewardHead(int(in_dim), hc)
        prefix = f"heads.{hname}."
        head.load_state_dict({k[len(prefix):]: v for k, v in best.items() if k.startswith(prefix)})
        head.eval()
        heads[hname] = head
    backbone_state = {k[9:]: v for k, v in best.items() if k.startswith("backbone.")} or None
    return GlobalStageResult(heads=heads, best_epoch=int(state["best_epoch"]), history=state["history"],
                             backbone_state=backbone_state, metrics=dict(result.metrics or {}))
