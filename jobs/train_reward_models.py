"""Train the four reward-model variants on Ray and score the eval pools (resumable).

    python jobs/train_reward_models.py --run-dir runs/x --dataset lamp4 [--config cfg.yaml] \
        [training.global_stage.zero_stage=2 training.user_stage.prior_strength=10 ...]

Reads `{run_dir}/candidates/{dataset}/{rm_train,eval}/` and `{run_dir}/data/{dataset}/profile.parquet`; writes
`{run_dir}/rm/{dataset}/<variant>/` and `{run_dir}/scores/{dataset}/scores.parquet`. `--config` reads the YAML's
`training:` section (or the whole file when it has none); trailing `key=value` overrides use the same dotted
keys. Exit status: 0 ok, 2 bad input or config, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ttp_ray.config import apply_overrides, read_yaml, validate
from ttp_ray.errors import DataError, TTPValidationError
from ttp_ray.training.config import TrainingConfig

log = logging.getLogger("ttp.train")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_reward_models", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML with a `training:` section")
    p.add_argument("--run-dir", required=True, help="the pipeline's run directory")
    p.add_argument("--dataset", required=True, help="dataset name (sub-folder of the run directory)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.user_stage.epochs=100")
    return p


def load_training_config(path: str | None, overrides: list[str]) -> TrainingConfig:
    """The `training:` section of `path` (or the whole file) plus `training.`-prefixed overrides."""
    tree = read_yaml(path) if path else {}
    section = tree.get("training", tree)
    data = {"training": dict(section or {})}
    apply_overrides(data, [o if o.startswith("training.") else f"training.{o}" for o in overrides])
    return validate(TrainingConfig, data["training"], source=path or "<defaults>")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    try:
        cfg = load_training_config(args.config, args.overrides)
        from ttp_ray.ray_utils import init_ray
        from ttp_ray.training.run import run_train

        init_ray(args.address)
        summary = run_train(args.run_dir, args.dataset, cfg)
    except (TTPValidationError, DataError) as e:
        print(f"train_reward_models: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # report, don't hide: the traceback goes to the log
        log.exception("training failed")
        print(f"train_reward_models: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
