"""`ttp` — one command, a subcommand per pipeline stage. Every stage subcommand takes the pipeline YAML
(`--config`, the same file `jobs/*.py` read) plus dotted `--set key=value` overrides.

    ttp data synth --out runs/synth            ttp generate --config configs/demo.yaml --dataset commits
    ttp data load --config cfg.yaml            ttp train    --config cfg.yaml
    ttp score --preds p.json --golds g.json    ttp tune     --config cfg.yaml
    ttp evaluate --config cfg.yaml             ttp report runs/demo
    ttp serve --config serve.yaml              ttp plan --users 10000 --queries 5 --n 30 --gpus 8
    ttp pipeline --config cfg.yaml             ttp demo [--full]

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


def _run_stages(stages: list[str], config, overrides, dataset, address) -> dict:
    from ttp_ray.pipeline import run_pipeline

    try:
        cfg = _pipeline_cfg(config, overrides, dataset)
        cfg.stages = stages
        if stages != ["data"]:
            _init_ray(cfg, address)
        return run_pipeline(cfg)
    except Exception as e:
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
             address: AddressOpt = None) -> None:
    """data → generate → train → evaluate for every dataset, then the combined report."""
    _setup_logging()
    from ttp_ray.pipeline_config import ALL_STAGES

    _run_stages(list(ALL_STAGES), config, set_, dataset, address)


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
    from ttp_ray.evaluation.report import render_table

    p = path / "report.json" if path.is_dir() else path
    if not p.is_file():
        typer.echo(f"ttp: error: no report at {p}", err=True)
        raise typer.Exit(2)
    typer.echo(render_table(json.loads(p.read_text())))


@app.command("serve")
def serve_cmd(config: Annotated[Path, typer.Option("--config", "-c", help="YAML with a `serving:` section")],
              set_: SetOpt = None, address: AddressOpt = None) -> None:
    """Deploy the best-of-N endpoint on Ray Serve and block (Ctrl-C to stop)."""
    _setup_logging()
    from ttp_ray.config import apply_overrides, read_yaml, validate
    from ttp_ray.ray_utils import init_ray
    from ttp_ray.serving.app import run_serve
    from ttp_ray.serving.config import ServingConfig

    try:
        tree = read_yaml(config)
        section = dict(tree.get("serving", tree))
        apply_overrides(section, set_)
        cfg = validate(ServingConfig, section, source=str(config))
        init_ray(address)
        run_serve(cfg, blocking=True)
    except Exception as e:
        _fail(e)


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
         set_: SetOpt = None) -> None:
    """The whole pipeline on the bundled models and data, on a local Ray cluster."""
    cfg_path = REPO_CONFIGS / ("demo-full.yaml" if full else "demo.yaml")
    overrides = list(set_ or [])
    if run_dir is not None:
        overrides.append(f"run_dir={run_dir}")
    pipeline(config=cfg_path, set_=overrides, dataset=None, address=None)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
