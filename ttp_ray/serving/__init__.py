"""Ray Serve deployment of test-time personalization: policy + reward scorer + FastAPI ingress.

`run_serve(cfg)` starts it (what `ttp serve` and `jobs/serve.py` call); `build_app` is the `import_path` for
`serve run` / `serve deploy` configs (cluster/serve_config.yaml); `serving_config_from_run(run_dir, dataset)` is the
config that serves what a pipeline run trained (`ttp serve --run-dir`). Importing `ServingConfig` does not import
Ray: the app functions load `ray.serve` on first use.
"""

from __future__ import annotations

from typing import Any

from ttp_ray.serving.config import ServingConfig
from ttp_ray.serving.from_run import serving_config_from_run

__all__ = ["ServingConfig", "build_app", "build_application", "run_serve", "serving_config_from_run"]

_LAZY = {"build_app", "build_application", "run_serve"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ttp_ray.serving import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
