"""Ray Tune sweeps over the per-user probabilistic head, scored by exact Best-of-N on held-out queries.

Importing this package is light (pydantic configs and the space parser): `ttp_ray.pipeline_config` imports
`SweepConfig`. The sweep itself (`run_tune`, `run_sweep`; torch, and Ray when called) loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ttp_ray.tuning.config import METRICS, AshaConfig, SweepConfig, TrialResources
from ttp_ray.tuning.space import ParamSpec, SearchSpace, check_space, load_space, parse_space, to_param_space

_LAZY = {
    "run_tune": "ttp_ray.tuning.sweep",
    "run_sweep": "ttp_ray.tuning.sweep",
    "load_sweep_data": "ttp_ray.tuning.sweep",
    "SweepData": "ttp_ray.tuning.objective",
    "PoolScorer": "ttp_ray.tuning.objective",
    "train_and_score": "ttp_ray.tuning.objective",
    "compare_configs": "ttp_ray.tuning.compare",
    "build_simulated_benchmark": "ttp_ray.tuning.benchmark",
}

__all__ = [
    "METRICS",
    "AshaConfig",
    "ParamSpec",
    "PoolScorer",
    "SearchSpace",
    "SweepConfig",
    "SweepData",
    "TrialResources",
    "build_simulated_benchmark",
    "check_space",
    "compare_configs",
    "load_space",
    "load_sweep_data",
    "parse_space",
    "run_sweep",
    "run_tune",
    "to_param_space",
    "train_and_score",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
