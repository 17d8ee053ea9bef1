"""Ray Tune sweep (Optuna + ASHA) of the per-user probabilistic head; writes results, a plot and best.yaml.

    python jobs/tune_variance_head.py --config cfg.yaml --run-dir runs/x --dataset commits
    python jobs/tune_variance_head.py --config cfg.yaml --run-dir runs/tune-synth --dataset synthetic --synthetic
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/tune_variance_head.py --config cfg.yaml --run-dir /mnt/runs/x --dataset commits

The YAML is a pipeline config: its `tuning:` section drives the sweep, and `training:` / `evaluation:` (if
present) fix the feature spec, the global-stage optimisation and the α/β thresholds. The sweep needs the RM
training features `ttp train` caches in {run_dir}/rm/{dataset}/features; `--synthetic` first builds a
synthetic benchmark there (the data stage's synthetic users, simulated candidate pools, features), and
`--simulate` does the same for a dataset of the config with real users (e.g. the commit data).
Exit status: 0 ok, 2 bad input/config, 1 failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ttp_ray.entrypoint import BAD_INPUT, run_job
from ttp_ray.errors import DataError, TTPValidationError

log = logging.getLogger("ttp.tune")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tune_variance_head", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="pipeline YAML with a `tuning:` section (default: all defaults)")
    p.add_argument("--run-dir", default=None, help="run directory (default: the config's run_dir)")
    p.add_argument("--dataset", default=None, help="dataset name (default: the config's first dataset)")
    p.add_argument("--synthetic", action="store_true",
                   help="build the synthetic benchmark (data, simulated pools, features) in run_dir if not there yet")
    p.add_argument("--simulate", action="store_true",
                   help="like --synthetic for the config's dataset of any kind (e.g. LaMP files): its real users "
                   "and references, candidate pools from the simulated policy")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted override key=value")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else start locally)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)

    def body() -> None:
        from ttp_ray.pipeline_config import PipelineDatasetConfig, load_pipeline_config
        from ttp_ray.ray_utils import init_ray
        from ttp_ray.tuning.benchmark import build_simulated_benchmark, features_dir
        from ttp_ray.tuning.sweep import run_tune

        cfg = load_pipeline_config(args.config, args.overrides)
        if args.run_dir:
            cfg.run_dir = Path(args.run_dir).absolute()  # as the config validator does
        name = args.dataset or cfg.datasets[0].name
        if args.synthetic or args.simulate:
            known = {d.name: d for d in cfg.datasets}
            if args.simulate and name not in known:
                raise TTPValidationError(f"--simulate: no dataset {name!r} in the config", parameter="dataset",
                                         value=name)
            base = known.get(name, PipelineDatasetConfig(name=name))
            if args.synthetic and base.kind != "synthetic":
                raise TTPValidationError(f"--synthetic: dataset {name!r} is kind={base.kind!r} in the config "
                                         "(use --simulate for simulated pools on real data)",
                                         parameter="dataset", value=name)
            cfg.datasets = [base.model_copy(update={"candidates": "simulated"})]
            log.info("building %s data, simulated pools and features in %s", name, cfg.run_dir)
            build_simulated_benchmark(cfg, name)
        cache = features_dir(cfg.run_dir, name, "rm_train")
        if not any((features_dir(cfg.run_dir, name, "rm_train", b) / "_SUCCESS").is_file()
                   for b in ("frozen", "tuned")):  # fail before starting Ray
            raise DataError("no cached RM training features: run `ttp train` first, or pass --synthetic",
                            file=str(cache))
        init_ray(args.address or cfg.ray.address, **cfg.ray.init_kwargs())
        res = run_tune(cfg.run_dir, name, cfg.tuning, training_cfg=cfg.training, eval_cfg=cfg.evaluation,
                       pipeline_cfg=cfg)
        print(json.dumps(res, indent=1, default=str))

    return run_job("tune_variance_head", body, (*BAD_INPUT, KeyError))


if __name__ == "__main__":
    sys.exit(main())
