"""Shared fixtures. Unit tests need no Ray; integration tests share one real local Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COMMIT_DATA = SHARED / "data" / "commit_subject_pytest"


@pytest.fixture(scope="session")
def commit_data_dir() -> Path:
    if not (COMMIT_DATA / "questions.json").is_file():
        pytest.skip(f"shared commit data not found at {COMMIT_DATA}")
    return COMMIT_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray cluster for the whole test session (logical CPUs oversubscribe the 2 cores)."""
    import ray

    from ttp_ray.ray_utils import init_ray

    init_ray(num_cpus=6, num_gpus=0, include_dashboard=False, object_store_memory=400 * 1024**2,
             namespace="ttp-tests")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_no_progress_timeout_s = 600  # fail, don't hang
    ctx.wait_for_min_actors_s = 600
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()
