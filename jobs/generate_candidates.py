"""Generate candidate pools (resumable): RAG prompts -> engine actor pools -> golden ROUGE -> Parquet.

    python jobs/generate_candidates.py --config cfg.yaml --run-dir runs/x --dataset commits --mode eval \
        [generation.n_candidates=8 generation.engine.backend=hf ...] [--overwrite]

Runs unchanged locally (starts Ray) and under `ray job submit` (attaches to the cluster via $RAY_ADDRESS).
`--config` reads the YAML's `generation:` section (or the whole file when it has none); trailing `key=value`
overrides use the same dotted keys. Rerunning after a crash or kill finishes the missing queries only.
The last stdout line is the run summary as one JSON object. Exit status: 0 ok, 2 bad input or config,
1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ttp_ray.config import apply_overrides, read_yaml, validate
from ttp_ray.errors import DataError, TTPValidationError
from ttp_ray.generation import GenerationConfig, run_generation
from ttp_ray.ray_utils import init_ray

log = logging.getLogger("ttp.generate")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate_candidates", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML with a `generation:` section")
    p.add_argument("--run-dir", required=True, help="run directory (reads data/{dataset}/, writes candidates/)")
    p.add_argument("--dataset", required=True, help="dataset name under {run_dir}/data/")
    p.add_argument("--mode", choices=["eval", "rm_train"], default="eval", help="test queries or RM training pools")
    p.add_argument("--overwrite", action="store_true", help="discard existing pools of this mode")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else start locally)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. generation.engine.backend=hf")
    return p


def load_generation_config(path: str | None, overrides: list[str]) -> GenerationConfig:
    """The `generation:` section of `path` (or the whole file) plus `generation.`-prefixed overrides."""
    tree = read_yaml(path) if path else {}
    section = tree.get("generation", tree)
    data = {"generation": dict(section or {})}
    apply_overrides(data, [o if o.startswith("generation.") else f"generation.{o}" for o in overrides])
    return validate(GenerationConfig, data["generation"], source=path or "<defaults>")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        cfg = load_generation_config(args.config, args.overrides)
        init_ray(args.address)
        summary = run_generation(args.run_dir, args.dataset, cfg, args.mode, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    except (TTPValidationError, DataError) as e:
        print(f"generate_candidates: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # report, don't hide: the traceback goes to the log
        log.exception("generation failed")
        print(f"generate_candidates: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
