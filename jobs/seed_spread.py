"""Seed spread: data + generate once per generation seed, then train + evaluate for each RM seed on its pools.

    python jobs/seed_spread.py --config ttp_ray/configs/commits.yaml --seeds 0 1 2 [--gen-seeds 0 1 2] [--set k=v]

Writes {run}/seeds/seed-<s>/ (report.json/.md, plots) and {run_dir}/seeds/summary.{json,md}: each method's
value at N=max and share of the oracle gain, mean ± sd over seeds (and over generation seeds, with the sd split
by source). Exit status: 0 ok, 2 bad input/config, 1 failure.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ttp_ray.entrypoint import BAD_INPUT, run_job
from ttp_ray.pipeline import run_seed_spread
from ttp_ray.pipeline_config import load_pipeline_config
from ttp_ray.ray_utils import init_ray


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seed_spread", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="pipeline YAML")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RM seeds (every seed the RMs use)")
    p.add_argument("--gen-seeds", type=int, nargs="+", default=None,
                   help="generation.engine.seed values (default: the config's own; others run in {run_dir}/gen/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override key=value")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else start locally)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)

    def body() -> None:
        cfg = load_pipeline_config(args.config, args.overrides)
        init_ray(args.address or cfg.ray.address, **cfg.ray.init_kwargs())
        run_seed_spread(cfg, args.seeds, args.gen_seeds)

    return run_job("seed_spread", body, (*BAD_INPUT, ValueError))

if __name__ == "__main__":
    sys.exit(main())
