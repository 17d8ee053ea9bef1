"""Serve the personalized best-of-N API on Ray Serve and block until interrupted.

    python jobs/serve.py --config serve.yaml [--address auto] [bounds.max_n=8 ...]

`--config` reads the YAML's `serving:` section (or the whole file when it has none); trailing `key=value`
overrides use the same dotted keys. The bearer token comes from $TTP_API_TOKEN or `auth.token_file`.
Exit status: 0 ok, 2 bad input or config, 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ttp_ray.config import apply_overrides, read_yaml, validate
from ttp_ray.errors import DataError, TTPValidationError
from ttp_ray.ray_utils import init_ray
from ttp_ray.serving import ServingConfig, run_serve
from ttp_ray.serving.auth import resolve_token

log = logging.getLogger("ttp.serve")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML with a `serving:` section (ServingConfig)")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else start locally)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. bounds.max_n=8")
    return p


def load_serving_config(path: str, overrides: list[str]) -> ServingConfig:
    tree = read_yaml(path)
    section = dict(tree.get("serving", tree))
    apply_overrides(section, overrides)
    return validate(ServingConfig, section, source=path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        cfg = load_serving_config(args.config, args.overrides)
        resolve_token(cfg.auth)  # refuse to start without a token before touching Ray
        init_ray(args.address)
        run_serve(cfg, blocking=True)
    except (TTPValidationError, DataError) as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # report, don't hide: the traceback goes to the log
        log.exception("serving failed")
        print(f"serve: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
