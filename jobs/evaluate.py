"""Evaluate reward models on candidate pools: exact Best-of-N, diagnostics, the scaling law, plots, report.

    python jobs/evaluate.py --candidates runs/x/candidates/lamp4/eval --scores runs/x/scores/lamp4/scores.parquet \
        --out runs/x/eval/lamp4 --dataset lamp4 [--config cfg.yaml] [evaluation.ns=[1,2,4,8] ...]

`--config` reads the YAML's `evaluation:` section (or the whole file when it has none); trailing `key=value`
overrides use the same dotted keys (`evaluation.golden=rougeL`). Exit status: 0 ok, 2 bad input or config,
1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ttp_ray.config import apply_overrides, read_yaml, validate
from ttp_ray.errors import DataError, TTPValidationError
from ttp_ray.evaluation.config import EvaluationConfig
from ttp_ray.evaluation.job import run_evaluate

log = logging.getLogger("ttp.evaluate")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML with an `evaluation:` section")
    p.add_argument("--candidates", required=True, help="CANDIDATES Parquet file or folder")
    p.add_argument("--scores", required=True, help="SCORES Parquet file or folder")
    p.add_argument("--out", required=True, help="output folder for report.json/.md and PNGs")
    p.add_argument("--dataset", default="dataset", help="dataset name recorded in the report")
    p.add_argument("--ray", choices=["auto", "on", "off"], default="auto",
                   help="Ray Data path: auto (by evaluation.ray_min_candidates), on, off")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. evaluation.golden=rougeL")
    return p


def load_evaluation_config(path: str | None, overrides: list[str]) -> EvaluationConfig:
    """The `evaluation:` section of `path` (or the whole file) plus `evaluation.`-prefixed overrides."""
    tree = read_yaml(path) if path else {}
    section = tree.get("evaluation", tree)
    data = {"evaluation": dict(section or {})}
    apply_overrides(data, [o if o.startswith("evaluation.") else f"evaluation.{o}" for o in overrides])
    return validate(EvaluationConfig, data["evaluation"], source=path or "<defaults>")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        cfg = load_evaluation_config(args.config, args.overrides)
        use_ray = {"auto": None, "on": True, "off": False}[args.ray]
        run_evaluate(args.candidates, args.scores, args.out, cfg, args.dataset, use_ray=use_ray)
    except (TTPValidationError, DataError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # report, don't hide: the traceback goes to the log
        log.exception("evaluation failed")
        print(f"evaluate: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
