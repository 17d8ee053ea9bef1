"""generate → train → evaluate with one config; every stage skips work already done (resumable).

    python jobs/pipeline.py --config ttp_ray/configs/demo.yaml [--set run_dir=runs/x] [--set key=value ...]
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/pipeline.py --config ttp_ray/configs/demo.yaml

Runs unchanged locally (starts Ray) and under `ray job submit` (attaches via $RAY_ADDRESS). Logs the resolved
config (also written to {run_dir}/pipeline.resolved.yaml). Exit status: 0 ok, 2 bad input/config, 1 failure.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ttp_ray.entrypoint import run_job
from ttp_ray.pipeline import run_pipeline
from ttp_ray.pipeline_config import ALL_STAGES, load_pipeline_config
from ttp_ray.ray_utils import init_ray


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="pipeline YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override key=value")
    p.add_argument("--stages", default=",".join(ALL_STAGES), help="comma-separated subset of the stages")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else start locally)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)

    def body() -> None:
        cfg = load_pipeline_config(args.config, args.overrides)
        cfg.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        init_ray(args.address or cfg.ray.address, **cfg.ray.init_kwargs())
        run_pipeline(cfg)

    return run_job("pipeline", body)

if __name__ == "__main__":
    sys.exit(main())
