"""One place that starts or attaches to Ray, with the environment every worker needs.

Builders never call `ray.init`; entrypoints (`jobs/*.py`, `ttp ...`) call `init_ray()` once.
"""

from __future__ import annotations

import json
import os
from typing import Any

# Propagated to every Ray worker: offline hub, CPU DeepSpeed where there is no GPU, quiet tokenizers.
WORKER_ENV_KEYS = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "DS_ACCELERATOR",
    "TOKENIZERS_PARALLELISM",
    "VLLM_CPU_KVCACHE_SPACE",
    "OMP_NUM_THREADS",
    "TTP_CACHE_DIR",
    "TTP_API_TOKEN",
)


def _job_env_vars() -> dict[str, str]:
    """env_vars of the job's runtime env when running under `ray job submit` (Ray refuses conflicting merges)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("runtime_env", {}).get("env_vars", {}) or {})
    except (ValueError, AttributeError):
        return {}


def worker_env(*, local_cluster: bool = True) -> dict[str, str]:
    """Env vars every worker needs. CPU-only defaults (DS_ACCELERATOR=cpu) apply only to a cluster this process
    starts itself: on a real cluster the driver may sit on a CPU head while the workers have GPUs."""
    env = {k: os.environ[k] for k in WORKER_ENV_KEYS if k in os.environ}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if local_cluster:
        try:
            import torch

            has_cuda = torch.cuda.is_available()
        except Exception:  # pragma: no cover - torch is a hard dependency
            has_cuda = False
        if not has_cuda:
            env.setdefault("DS_ACCELERATOR", "cpu")
    for key in _job_env_vars():  # the job's runtime env already sets these; a second value is an error
        env.pop(key, None)
    return env


def init_ray(address: str | None = None, **kwargs: Any) -> None:
    """Attach to a running cluster (under `ray job submit`, or `address=`), else start a local one.

    Token auth is disabled only for clusters this call starts locally and only when the caller did not set it.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    local = not address
    if local:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    else:  # sizing a cluster is only for clusters we start; an existing one refuses these
        for key in ("num_cpus", "num_gpus", "object_store_memory", "resources", "include_dashboard"):
            kwargs.pop(key, None)
    kwargs.setdefault("runtime_env", {"env_vars": worker_env(local_cluster=local)})
    kwargs.setdefault("log_to_driver", True)
    ray.init(address=address, **kwargs)


def train_worker_cpus(num_workers: int, *, want: float = 1.0, reserve: float = 1.0,
                      total_cpus: float | None = None) -> float:
    """CPUs to request per Ray Train worker so that `reserve` CPUs stay free for Ray Data's tasks.

    A Ray Dataset handed to a trainer still lists and reads its files in ordinary tasks (1 CPU each); on a
    2-CPU node two 1-CPU workers leave none, and the run waits forever (measured here: `make demo` hung in
    ListFiles). Where the cluster has room this is `want`; below it the workers share what is left.
    `total_cpus` defaults to the connected cluster's CPUs.
    """
    if total_cpus is None:
        import ray

        total_cpus = float(ray.cluster_resources().get("CPU", 0.0))
    fit = (total_cpus - reserve) / max(num_workers, 1)
    return want if fit >= want else max(0.1, round(fit, 2))
