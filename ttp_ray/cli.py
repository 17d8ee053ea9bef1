"""`ttp` — one command, a subcommand per pipeline stage. Every stage subcommand takes the pipeline YAML
(`--config`, the same file `jobs/*.py` read) plus dotted `--set key=value` overrides.

    ttp data synth --out runs/synth            ttp generate --config configs/demo.yaml --dataset commits
    ttp data load --config cfg.yaml            ttp train    --config cfg.yaml
    ttp score --preds p.json --golds g.json    ttp tune     --config cfg.yaml
    ttp evaluate --config cfg.yaml             ttp report runs/demo
    ttp serve --config serve.yaml              ttp plan --users 10000 --queries 5 --n 30 --gpus 8
    ttp pipeline --config cfg.yaml             ttp demo [--full]
    ttp serve --run-dir runs/demo --dataset commits     (what a run trained; prints a fresh API token once)

Heavy imports (ray, torch, vllm) happen inside the subcommand that needs them, so `ttp --help` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Test-time personalization on Ray.")
data_app = typer.Typer(no_args_is_help=True, help="Synthesize, load and validate datasets.")
app.add_typer(data_app, name="data")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="pipeline YAML (see configs/)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="dotted override key=value (repeatable)")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help="only this dataset (default: all)")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray address (default: $RAY_ADDRESS or local)")]

REPO_CONFIGS = Path(__file__).resolve().parent / "configs"


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _pipeline_cfg(config: Path | None, overrides: list[str] | None, dataset: str | None = None):
    import yaml

    from ttp_ray.errors import TTPValidationError
    from ttp_ray.pipeline_config import load_pipeline_config

    try:
        cfg = load_pipeline_config(config, overrides)
    except UnicodeDecodeError as e:
        raise TTPValidationError(f"{config}: not UTF-8 at byte {e.start}: {e.reason}", parameter="config",
                                 value=str(config)) from None
    except yaml.YAMLError as e:  # the message names the file (or the override) and the line
        raise TTPValidationError(f"invalid YAML: {e}", parameter="config", value=str(config)) from None
    if dataset is not None:
        cfg.datasets = [cfg.dataset(dataset)]
    return cfg


def _init_ray(cfg, address: str | None) -> None:
    from ttp_ray.ray_utils import init_ray

    init_ray(address or cfg.ray.address, **cfg.ray.init_kwargs())


def _fail(e: Exception) -> None:
    from ttp_ray.errors import DataError, TTPValidationError

    if isinstance(e, TTPValidationError | DataError | FileNotFoundError | KeyError):
        one_line = "; ".join(part.strip() for part in str(e).splitlines() if part.strip())
        typer.echo(f"ttp: error: {one_line}", err=True)
        raise typer.Exit(2) from None
    raise e


def _run_stages(stages: list[str], config, overrides, dataset, address, *, quiet: bool = False) -> dict:
    """Run `stages`; with `quiet`, Ray/vLLM/progress-bar output goes to {run_dir}/logs/console.log and the
    terminal shows only the `[ttp]` stage lines, the table and the claims."""
    from contextlib import nullcontext

    from ttp_ray import console
    from ttp_ray.pipeline import run_pipeline

    log_path = None
    try:
        cfg = _pipeline_cfg(config, overrides, dataset)
        cfg.stages = stages
        log_path = cfg.run_dir / "logs" / "console.log"
        with console.quiet(log_path) if quiet else nullcontext():
            if quiet:
                console.say(f"Ray, vLLM and progress output: {log_path}")
            started = False
            if stages != ["data"]:
                import ray

                started = not ray.is_initialized()
                _init_ray(cfg, address)
            try:
                return run_pipeline(cfg)
            finally:
                if quiet and started:
                    # Ray forwards workers' output to the driver asynchronously: shut down inside the redirect
                    # (also on failure) so late lines land in the log, and the terminal ends with our lines
                    ray.shutdown()
    except Exception as e:
        if quiet and log_path is not None:
            typer.echo(f"ttp: the full log is {log_path}", err=True)
        _fail(e)
        raise


# ----------------------------------------------------------------------------------------------- data
@data_app.command("synth")
def data_synth(out: Annotated[Path, typer.Option(help="output folder for questions.json / outputs.json")],
               config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Write the synthetic multi-user benchmark in LaMP format (deterministic by seed)."""
    from ttp_ray.config import load_config
    from ttp_ray.data.config import SyntheticConfig
    from ttp_ray.data.synthetic import run_synth

    try:
        run_synth(load_config(SyntheticConfig, config, set_), out)
    except Exception as e:
        _fail(e)


@data_app.command("load")
def data_load(config: ConfigOpt = None, set_: SetOpt = None, dataset: DatasetOpt = None) -> None:
    """Load the config's datasets into the Arrow schemas under {run_dir}/data/ (bad records → errors.parquet)."""
    _setup_logging()
    _run_stages(["data"], config, set_, dataset, None)


@app.command("score")
def score(preds: Annotated[Path, typer.Option(help="predictions in LaMP outputs format")],
          golds: Annotated[Path, typer.Option(help="gold outputs file (LaMP format)")],
          out: Annotated[Path | None, typer.Option(help="per-example Parquet")] = None) -> None:
    """LaMP-exact ROUGE-1/ROUGE-L of a predictions file against the golds."""
    from ttp_ray.scoring.lamp_eval import run_score

    try:
        typer.echo(json.dumps(run_score(preds, golds, out), indent=1))
    except Exception as e:
        _fail(e)


# --------------------------------------------------------------------------------------------- stages
@app.command("generate")
def generate(config: ConfigOpt = None, set_: SetOpt = None, dataset: DatasetOpt = None,
             address: AddressOpt = None) -> None:
    """Candidate pools (rm_train + eval) through the engine actor pools; resumable."""
    _setup_logging()
    _run_stages(["data", "generate"], config, set_, dataset, address)


@app.command("train")
def train(config: ConfigOpt = None, set_: SetOpt = None, dataset: DatasetOpt = None,
          address: AddressOpt = None) -> None:
    """Global (Ray Train + DeepSpeed) and per-user reward models, then score the eval pools."""
    _setup_logging()
    _run_stages(["train"], config, set_, dataset, address)


@app.command("evaluate")
def evaluate(config: ConfigOpt = None, set_: SetOpt = None, dataset: DatasetOpt = None,
             address: AddressOpt = None) -> None:
    """Exact Best-of-N curves, diagnostics, the scaling law, plots and report."""
    _setup_logging()
    _run_stages(["evaluate"], config, set_, dataset, address)


@app.command("pipeline")
def pipeline(config: ConfigOpt = None, set_: SetOpt = None, dataset: DatasetOpt = None,
             address: AddressOpt = None,
             quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Ray/vLLM output to {run_dir}/logs/console.log; "
                                                 "the terminal shows stages, the table and the claims")] = False,
             ) -> None:
    """data → generate → train → evaluate for every dataset, then the combined report."""
    _setup_logging()
    from ttp_ray.pipeline_config import ALL_STAGES

    _run_stages(list(ALL_STAGES), config, set_, dataset, address, quiet=quiet)


@app.command("tune")
def tune(config: ConfigOpt = None, set_: SetOpt = None, dataset: DatasetOpt = None,
         address: AddressOpt = None) -> None:
    """Ray Tune sweep (ASHA + Optuna) of the variance head on cached RM features; writes best.yaml."""
    _setup_logging()
    from ttp_ray.tuning.sweep import run_tune

    try:
        cfg = _pipeline_cfg(config, set_, dataset)
        _init_ray(cfg, address)
        for d in cfg.datasets:
            res = run_tune(cfg.run_dir, d.name, cfg.tuning, training_cfg=cfg.training, eval_cfg=cfg.evaluation,
                           pipeline_cfg=cfg)
            typer.echo(json.dumps(res, indent=1, default=str))
    except Exception as e:
        _fail(e)


@app.command("report")
def report(path: Annotated[Path, typer.Argument(help="report.json or a run directory")]) -> None:
    """Print the headline table of a report."""
    from ttp_ray.evaluation.render import render_table

    p = path / "report.json" if path.is_dir() else path
    if not p.is_file():
        typer.echo(f"ttp: error: no report at {p}", err=True)
        raise typer.Exit(2)
    typer.echo(render_table(json.loads(p.read_text())))


@app.command("serve")
def serve_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML with a `serving:` section")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="serve a pipeline run (e.g. runs/demo) with --dataset")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="with --run-dir: whose RM and users")] = None,
    variant: Annotated[str | None, typer.Option(help="with --run-dir: RM variant (default user-prob)")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8000)")] = None,
    set_: SetOpt = None, address: AddressOpt = None,
) -> None:
    """Deploy the best-of-N endpoint on Ray Serve and block (Ctrl-C to stop).

    `--run-dir runs/demo --dataset commits` serves what a pipeline run trained, with a fresh API token printed
    once; `--config` serves a `serving:` section with the token from $TTP_API_TOKEN or `auth.token_file`.
    """
    _setup_logging()
    from ttp_ray.errors import TTPValidationError

    try:
        if (config is None) == (run_dir is None):
            raise TTPValidationError("give exactly one of --run-dir DIR --dataset NAME (serve a pipeline run) and "
                                     "--config YAML (a `serving:` section)", parameter="config")
        if run_dir is not None:
            _serve_run(run_dir, dataset, variant or "user-prob", host, port, set_, address)
        else:
            if dataset is not None or variant is not None:
                raise TTPValidationError("--dataset and --variant go with --run-dir; with --config set `rm_dir` "
                                         "and `rm_variant` in the YAML", parameter="dataset")
            _serve_config(config, host, port, set_, address)
    except Exception as e:
        _fail(e)


def _serve_config(config: Path, host: str | None, port: int | None, overrides: list[str] | None,
                  address: str | None) -> None:
    from ttp_ray.config import apply_overrides, read_yaml, validate
    from ttp_ray.errors import TTPValidationError
    from ttp_ray.serving.config import ServingConfig

    tree = read_yaml(config)
    if "applications" in tree and "serving" not in tree:
        raise TTPValidationError(f"{config} is a Ray Serve config: run it with `serve run {config}`, or serve a "
                                 "pipeline run with `ttp serve --run-dir runs/demo --dataset commits`",
                                 parameter="config", value=str(config))
    section = dict(tree.get("serving", tree))
    apply_overrides(section, overrides)
    section.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    cfg = validate(ServingConfig, section, source=str(config))
    from ttp_ray.ray_utils import init_ray
    from ttp_ray.serving.app import run_serve

    init_ray(address)
    run_serve(cfg, blocking=True)


def _serve_run(run_dir: Path, dataset: str | None, variant: str, host: str | None, port: int | None,
               overrides: list[str] | None, address: str | None) -> None:
    """`ttp serve --run-dir`: derive the config, start Ray with a fresh token in the workers' env, print it once."""
    import math
    import os
    import secrets
    import time

    from ttp_ray.serving.from_run import (
        example_request,
        load_run_config,
        required_cpus,
        serving_config_from_run,
        usage_text,
    )

    cfg = serving_config_from_run(run_dir, dataset, variant=variant, host=host or "127.0.0.1", port=port or 8000,
                                  overrides=overrides)
    assert dataset is not None and cfg.policy is not None  # serving_config_from_run checked both
    run = load_run_config(run_dir)
    user, query = example_request(run_dir, dataset)
    from ttp_ray.ray_utils import init_ray  # Ray and the Serve app only once the config is known to be good
    from ttp_ray.serving.app import run_serve

    # The replicas read the token from this variable: init_ray hands it to every worker in the job's runtime env
    # (ttp_ray.ray_utils.WORKER_ENV_KEYS), nothing writes it to a file. This process's stdout shows it once.
    token = secrets.token_urlsafe(32)
    os.environ[cfg.auth.token_env] = token
    ray_kwargs = run.ray.init_kwargs()
    # a local cluster big enough for the three deployments (logical CPUs; the ingress and scorer idle while the
    # policy generates)
    ray_kwargs["num_cpus"] = max(ray_kwargs.get("num_cpus") or os.cpu_count() or 1, math.ceil(required_cpus(cfg)))
    init_ray(address or run.ray.address, **ray_kwargs)
    run_serve(cfg, blocking=False)  # returns once every replica is up (models loaded)
    typer.echo(usage_text(cfg, run_dir, dataset, token, user, query))
    while True:  # like serve.run(blocking=True): Ctrl-C ends the process (and the local cluster with it)
        time.sleep(60)


@app.command("plan")
def plan(users: Annotated[int, typer.Option(help="users U")],
         queries: Annotated[int, typer.Option(help="test queries per user Q")] = 5,
         n: Annotated[int, typer.Option(help="candidates per query")] = 30,
         gpus: Annotated[int, typer.Option(help="GPUs")] = 8,
         preset: Annotated[str, typer.Option(help="throughputs: paper | cpu-2core")] = "paper") -> None:
    """Estimate GPU-hours and wall time for U users × Q queries × N candidates."""
    from ttp_ray.planning import run_plan

    try:
        run_plan(users, queries, n, gpus, preset=preset)
    except Exception as e:
        _fail(e)


@app.command("demo")
def demo(full: Annotated[bool, typer.Option("--full", help="bigger sizes (tens of minutes)")] = False,
         run_dir: Annotated[Path | None, typer.Option(help="default runs/demo (runs/demo-full)")] = None,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Ray/vLLM output on the terminal too "
                                               "(default: {run_dir}/logs/console.log)")] = False,
         set_: SetOpt = None) -> None:
    """The whole pipeline on the bundled models and data, on a local Ray cluster."""
    cfg_path = REPO_CONFIGS / ("demo-full.yaml" if full else "demo.yaml")
    overrides = list(set_ or [])
    if run_dir is not None:
        overrides.append(f"run_dir={run_dir}")
    pipeline(config=cfg_path, set_=overrides, dataset=None, address=None, quiet=not verbose)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
