"""The global stage on Ray Train: backbone (frozen | LoRA | full) + the Global-Det / Global-Prob heads.

`run_global_stage` runs the objective of `global_fit.fit_global_head` on a `TorchTrainer` whose workers build
the model of `global_worker` from a typed `GlobalLoopConfig`, wrap it with `deepspeed.initialize` (ZeRO stage
from config; DS_ACCELERATOR=cpu on CPU), read their shard of a Ray Dataset, checkpoint every epoch
(safetensors, see `checkpoint.py`) and resume from `ray.train.get_checkpoint()` after a worker failure
(`FailureConfig(max_failures)`), from the newest intact epoch (`epoch_checkpoints`). `training.use_gpu` and
`training.resources_per_worker` set what each worker reserves (`scaling.scaling_config`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttp_ray.reward.config import FeatureConfig, HeadConfig
from ttp_ray.reward.heads import RewardHead
from ttp_ray.training.checkpoint import (
    load_optimizer_state,
    load_tensors,
    save_optimizer_state,
    save_tensors,
)
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.training.epoch_checkpoints import checkpoint_digest, restore_checkpoint
from ttp_ray.training.global_fit import group_order, local_groups, val_metrics
from ttp_ray.training.global_worker import (
    FaultInjection,
    GlobalLoopConfig,
    build_model,
    ds_config,
    head_losses,
    materialize_shard,
    param_groups,
    take_rows,
    to_device,
)
from ttp_ray.training.scaling import scaling_config

__all__ = ["GlobalStageResult", "run_global_stage"]

log = logging.getLogger(__name__)


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def _global_train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DeepSpeed over all global heads, per-epoch safetensors checkpoints.

    `config` is a `GlobalLoopConfig.model_dump()` (Ray Train hands the loop a dict); validated back first."""
    import ray.train

    loop = GlobalLoopConfig.model_validate(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    gcfg, head_cfgs = loop.global_cfg, loop.head_cfgs
    if loop.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    model = build_model(loop).to(device)
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
        restored, skipped = restore_checkpoint(ckpt, rank)
    if restored is not None:
        model_state, state, best, optim_dir = restored
        model.load_trainable_state(model_state)
        restored_from = int(state["epoch"])
    else:
        if ckpt is not None:  # a restart with no intact checkpoint: from scratch, but counted as a restart
            state["attempts"] = 1
        best = model.trainable_state()
    state["attempts"] = int(state.get("attempts", 0)) + 1

    optimizer = torch.optim.AdamW(param_groups(model, gcfg), weight_decay=gcfg.weight_decay)
    engine = None
    if gcfg.deepspeed and torch.distributed.is_available() and torch.distributed.is_initialized():
        import deepspeed

        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                       config=ds_config(gcfg, world))
    base_opt = getattr(optimizer, "optimizer", optimizer)  # ZeRO-1/2 wrap the client optimizer
    if optim_dir is not None and not load_optimizer_state(base_opt, optim_dir, f"optim-rank{rank}"):
        log.warning("rank %d: no optimizer state in the checkpoint; AdamW moments restart", rank)

    golden, objective = loop.golden, loop.objective
    train = materialize_shard(ray.train.get_dataset_shard("train"), golden)
    val = materialize_shard(ray.train.get_dataset_shard("val"), golden) if loop.has_val else None
    # the within-query objective's groups: the queries of this worker's shard (a query split across workers is
    # two valid pieces); kept out of the batches the model reads
    groups = {name: d.pop("group", None) for name, d in (("train", train), ("val", val)) if d is not None}
    train_group, val_group = (groups.get("train"), groups.get("val")) if objective != "pointwise" else (None, None)
    n = len(train["golden"])
    # the groups stay on the CPU (they order the rows); the batches the model reads move to `device`
    train = to_device(train, device)
    val = to_device(val, device) if val is not None else None
    fault = loop.fault
    start = int(state["epoch"]) + 1
    for epoch in range(start, gcfg.epochs + 1):
        if fault and rank == fault.rank and epoch == fault.epoch and not os.path.exists(fault.marker):
            Path(fault.marker).write_text(f"rank {rank} died at epoch {epoch}\n")
            time.sleep(fault.delay_s)
            if fault.corrupt_latest:  # a crash that also left the last checkpoint half-written
                newest = max(Path(loop.fault_storage_dir).glob("epoch_*"))
                (newest / "model.safetensors").write_bytes(b"\0" * 64)
            os._exit(1)  # a hard crash: no cleanup, no report
        model.train()
        gen = torch.Generator().manual_seed(loop.seed * 1000 + epoch)  # same step count on every rank
        perm = group_order(n, train_group, gen)
        total = 0.0
        for s in range(0, n, gcfg.batch_size):
            idx = perm[s : s + gcfg.batch_size]
            tb = take_rows(train, idx)
            raws = engine(tb) if engine is not None else model(tb)
            active = {h for h in head_cfgs if not per_head or state["stop"][h]["bad"] < gcfg.patience}
            loss = head_losses(raws, tb["golden"], head_cfgs, gcfg.beta_nll, active,
                               _to(local_groups(train_group, idx), device), objective)
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
                m = val_metrics(raw, val["golden"], head_cfgs[name],
                                _to(local_groups(val_group, torch.arange(len(val["golden"]))), device), objective)
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
                (Path(d) / "digest.json").write_text(json.dumps(checkpoint_digest(Path(d))))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"epoch_{epoch:04d}" + (f"-a{state['attempts']:02d}"
                                                                          if state["attempts"] > 1 else ""))
        if stop:
            break


@dataclass
class GlobalStageResult:
    """The global heads at their best epochs, the tuned backbone's weights (LoRA/full) and the run's record."""

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
    use_gpu: bool = False,
    resources_per_worker: dict[str, float] | None = None,
) -> GlobalStageResult:
    """Train the global heads (e.g. {"global-det": Det, "global-prob": Prob}) side by side on Ray Train.

    `train_ds`/`val_ds` are Ray Datasets with a `golden` column and either `features` (frozen backbone) or
    `query_text`, `text`, `cu`, `scalars` (LoRA/full backbone, shared by the heads). Every worker wraps the model
    with `deepspeed.initialize` (`cfg.zero_stage`), checkpoints each epoch (safetensors: weights, best weights,
    its AdamW shard; JSON: epoch, early-stopping state) and, after a worker failure, resumes from
    `ray.train.get_checkpoint()` (`FailureConfig(max_failures=cfg.max_failures)`). On frozen features each head
    early-stops on its own validation loss and keeps its own best epoch; heads sharing a tuned backbone stop on
    the sum of their losses. `use_gpu` / `resources_per_worker` (`TrainingConfig`) set what each worker
    reserves; with `use_gpu` the model and batches live on `ray.train.torch.get_device()`.
    """
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from ttp_ray.ray_utils import train_worker_cpus, worker_env

    loop = GlobalLoopConfig(
        head_cfgs=head_cfgs,
        global_cfg=cfg,
        feature_cfg=feature_cfg,
        in_dim=int(in_dim),
        x_mean=np.asarray(x_mean, dtype=np.float32).tolist(),
        x_std=np.asarray(x_std, dtype=np.float32).tolist(),
        g_mean=float(g_mean),
        g_var=float(g_var),
        golden=golden,
        seed=seed,
        objective=objective,
        has_val=val_ds is not None,
        use_gpu=use_gpu,
        fault=fault,
        fault_storage_dir=str(Path(storage_path).resolve() / name) if fault else None,
    )
    default_cpus = train_worker_cpus(cfg.num_workers) if resources_per_worker is None else None
    datasets = {"train": train_ds} | ({"val": val_ds} if val_ds is not None else {})
    trainer = TorchTrainer(
        _global_train_loop,
        train_loop_config=loop.model_dump(),
        scaling_config=scaling_config(cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker,
                                      default_cpus=default_cpus),
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
