"""What each Ray Train worker of a stage reserves: `ScalingConfig` from the `training:` config.

`worker_resources` is the rule and imports nothing; `scaling_config` only wraps it in Ray's dataclass (no
cluster needed), so a unit test can check that `use_gpu` and `resources_per_worker` reach the trainers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["scaling_config", "worker_resources"]


def worker_resources(*, use_gpu: bool, resources_per_worker: Mapping[str, float] | None,
                     default_cpus: float | None) -> dict[str, float] | None:
    """Resources per worker: the configured ones, else `{"CPU": default_cpus}` (None: Ray's default, 1 CPU or,
    with a GPU, 1 GPU); with `use_gpu`, `"GPU": 1` is added when absent (Ray rejects `use_gpu=True` beside a
    resource dict without a GPU)."""
    if resources_per_worker is not None:
        res: dict[str, float] | None = {k: float(v) for k, v in resources_per_worker.items()}
    else:
        res = {"CPU": float(default_cpus)} if default_cpus is not None else None
    if use_gpu and res is not None:
        res.setdefault("GPU", 1.0)
    return res


def scaling_config(num_workers: int, *, use_gpu: bool = False, resources_per_worker: Mapping[str, float] | None = None,
                   default_cpus: float | None = None) -> Any:
    """`ray.train.ScalingConfig` for `num_workers` workers (see `worker_resources`)."""
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                         resources_per_worker=worker_resources(use_gpu=use_gpu, resources_per_worker=resources_per_worker,
                                                               default_cpus=default_cpus))
