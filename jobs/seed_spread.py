"""RM seed spread: data + generate once, then train + evaluate for each seed on the same candidate pools.

    python jobs/seed_spread.py --config ttp_ray/configs/commits.yaml --seeds 0 1 2 3 4 [--set key=value ...]

Writes {run_dir}/seeds/seed-<s>/ (report.json/.md, plots) and {run_dir}/seeds/summary.{json,md}: each method's
value at N=max and share of the oracle gain, mean ± sd over seeds. Exit status: 0 ok, 2 bad input/config,
1 failure.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ttp_ray.errors import DataError, TTPValidationError
from ttp_ray.evaluation.seeds import run_seed_spread
from ttp_ray.pipeline_config import load_pipeline_config
from ttp_ray.ray_utils import init_ray

log = logging.getLogger("ttp.seed_spread")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seed_spread", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="pipeline YAML")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training.seed values")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override key=value")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else start locally)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        cfg = load_pipeline_config(args.config, args.overrides)
        init_ray(args.address or cfg.ray.address, **cfg.ray.init_kwargs())
        run_seed_spread(cfg, args.seeds)
    except (TTPValidationError, DataError, FileNotFoundError, ValueError) as e:
        print(f"seed_spread: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        log.exception("seed spread failed")
        print(f"seed_spread: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
