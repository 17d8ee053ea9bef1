"""The data layer: Arrow schemas, loaders (LaMP, LongLaMP, synthetic), the simulated policy.

Attributes are imported lazily so that `import ttp_ray.data.schema` stays light and free of import cycles
(`ttp_ray.scoring` imports the schemas; the simulated policy imports `ttp_ray.scoring`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetConfig": "ttp_ray.data.config",
    "SyntheticConfig": "ttp_ray.data.config",
    "LoadedDataset": "ttp_ray.data.dataset",
    "load_lamp": "ttp_ray.data.lamp",
    "load_longlamp": "ttp_ray.data.longlamp",
    "load_dataset": "ttp_ray.data.loaders",
    "run_load": "ttp_ray.data.loaders",
    "run_synth": "ttp_ray.data.synthetic",
    "write_synthetic": "ttp_ray.data.synthetic",
    "simulate_pools": "ttp_ray.data.simulated",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
