"""The per-user stage on Ray Train: users sharded across workers, each owning a disjoint slice of the bank (so
no gradient all-reduce is needed), every worker running the pure `user_fit.fit_user_stage` on its users' rows
of the feature cache; the slices come back as checkpoint shards and are merged into one bank per job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ttp_ray.errors import TTPValidationError
from ttp_ray.reward.bank import PersonalizedHead
from ttp_ray.reward.config import UserStageConfig
from ttp_ray.reward.heads import RewardHead
from ttp_ray.training.scaling import scaling_config
from ttp_ray.training.user_fit import check_head, fit_user_stage, sort_rows

__all__ = ["run_user_stage"]


def _user_stage_loop(loop_cfg: dict[str, Any]) -> None:
    """One worker: fit the bank rows of its user slice for every job and report them as checkpoint shards."""
    import tempfile

    import pyarrow.compute as pc
    import ray.train

    from ttp_ray.reward.config import HeadConfig
    from ttp_ray.training.checkpoint import save_tensors
    from ttp_ray.training.features_job import features_matrix, read_feature_table

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), max(ctx.get_world_size(), 1)
    users: list[str] = loop_cfg["user_index"]
    mine = users[rank::world]  # disjoint slices; interleaved so slices get similar amounts of data
    table = read_feature_table(loop_cfg["features_dir"], columns=["user_id", "query_id", "cand_idx",
                                                                  loop_cfg["golden"], "features"])
    table = sort_rows(table.filter(pc.is_in(table["user_id"], pa.array(mine, pa.string()))))
    local = {u: i for i, u in enumerate(mine)}
    x = features_matrix(table)
    g = table[loop_cfg["golden"]].to_numpy(zero_copy_only=False)
    u = np.array([local[v] for v in table["user_id"].to_pylist()], dtype=np.int64)
    q = table["query_id"].to_numpy(zero_copy_only=False)
    metrics: dict[str, Any] = {"rank": rank, "users": len(mine), "rows": len(u)}
    with tempfile.TemporaryDirectory() as d:
        for name, job in loop_cfg["jobs"].items():
            cfg = UserStageConfig.model_validate(job["user_cfg"])
            head = RewardHead(loop_cfg["in_dim"], HeadConfig.model_validate(job["head_cfg"]))
            head.load_state_dict({k: torch.tensor(v) for k, v in job["head_state"].items()})
            res = fit_user_stage(x, g, u, q, head, cfg, n_users=max(len(mine), 1))
            save_tensors({"weight": res.model.bank.weight[: len(mine)],
                          "best_epoch": torch.as_tensor(res.best_epoch[: len(mine)])},
                         Path(d) / f"{name}-rank{rank:04d}.safetensors", metadata={"users": json.dumps(mine)})
            metrics[f"{name}/epochs"] = len(res.history) - 1
            metrics[f"{name}/improved_users"] = int((res.best_epoch[: len(mine)] > 0).sum())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name="banks")


def run_user_stage(
    features_dir: str | Path,
    user_index: list[str],
    jobs: dict[str, tuple[RewardHead, UserStageConfig]],
    *,
    golden: str,
    num_workers: int,
    storage_path: str | Path,
    name: str = "user-stage",
    use_gpu: bool = False,
    resources_per_worker: dict[str, float] | None = None,
) -> dict[str, PersonalizedHead]:
    """Fit banks for `user_index` on Ray Train, users sharded across `num_workers` workers.

    `jobs` maps a name (e.g. "user-prob") to (frozen global head, settings); every worker fits all jobs on
    its own users' rows of the feature cache (read once) with `fit_user_stage`. Workers never exchange
    gradients: their shards come back in one merged Ray Train checkpoint and are assembled into one bank per
    job, in `user_index` order. `use_gpu` / `resources_per_worker` (`TrainingConfig`) set what each worker
    reserves (None: Ray's default, 1 CPU); the bank fit itself runs on the worker's CPU.
    """
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer
    from safetensors import safe_open

    from ttp_ray.ray_utils import worker_env
    from ttp_ray.training.checkpoint import load_tensors

    for head, cfg in jobs.values():
        check_head(head, cfg)
    in_dims = {head.in_dim for head, _ in jobs.values()}
    if len(in_dims) != 1:
        raise TTPValidationError(f"all jobs must read the same features, got input widths {sorted(in_dims)}",
                                 parameter="jobs")
    loop_cfg = {
        "features_dir": str(features_dir),
        "user_index": list(user_index),
        "in_dim": in_dims.pop(),
        "golden": golden,
        "jobs": {k: {"user_cfg": cfg.model_dump(), "head_cfg": head.cfg.model_dump(),
                     "head_state": {n: v.numpy() for n, v in head.state_dict().items()}}
                 for k, (head, cfg) in jobs.items()},
    }
    trainer = TorchTrainer(
        _user_stage_loop,
        train_loop_config=loop_cfg,
        scaling_config=scaling_config(num_workers, use_gpu=use_gpu, resources_per_worker=resources_per_worker),
        run_config=RunConfig(name=name, storage_path=str(Path(storage_path).resolve()),
                             worker_runtime_env={"env_vars": worker_env()}),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    row = {u: i for i, u in enumerate(user_index)}
    out: dict[str, PersonalizedHead] = {}
    with result.checkpoint.as_directory() as d:
        for job, (head, cfg) in jobs.items():
            model = PersonalizedHead(head, max(len(user_index), 1), cfg.user_input)
            shards = sorted(Path(d).glob(f"{job}-rank*.safetensors"))
            if not shards:
                raise RuntimeError(f"user stage checkpoint {d} holds no bank shards for {job!r}")
            with torch.no_grad():
                for shard in shards:
                    with safe_open(str(shard), "pt") as f:
                        users = json.loads(f.metadata()["users"])
                    rows = load_tensors(shard)["weight"]
                    idx = torch.tensor([row[u] for u in users], dtype=torch.long)
                    model.bank.weight[idx] = rows[: len(users)]
            out[job] = model
    return out
