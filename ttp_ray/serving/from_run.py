"""The `ServingConfig` that serves one dataset of a finished pipeline run (`ttp serve --run-dir DIR --dataset NAME`).

What is served is what the run used: the policy of its `generation` section (engine, sampling, retrieval, prompt
budget, from `{run_dir}/pipeline.resolved.yaml`) over the dataset's stored profiles (`data/{dataset}/`), and the
reward model `rm/{dataset}/{variant}`. Nothing here starts Ray, loads a model or reads a token: a missing piece is
a `TTPValidationError` naming it and the command that makes it, raised before anything starts.

Example:
    >>> cfg = serving_config_from_run("runs/demo", "commits")          # doctest: +SKIP
    >>> cfg.rm_dir, cfg.policy.task                                     # doctest: +SKIP
    ('/home/me/ttp-ray/runs/demo/rm/commits', 'commit_subject')
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from pydantic import ValidationError

from ttp_ray.config import apply_overrides, validate
from ttp_ray.errors import TTPValidationError
from ttp_ray.serving.config import AuthConfig, BoundsConfig, DeploymentSection, RmVariant, ServingConfig

if TYPE_CHECKING:
    from ttp_ray.pipeline_config import PipelineConfig

__all__ = [
    "RESOLVED_CONFIG", "example_request", "load_run_config", "required_cpus", "serving_config_from_run", "usage_text",
]

RESOLVED_CONFIG = "pipeline.resolved.yaml"  # written by run_pipeline into every run directory
# Logical CPUs of the two light deployments; the policy gets the run's `generation.actors.num_cpus`.
INGRESS_CPUS = 0.25
SCORER_CPUS = 0.25


def load_run_config(run_dir: str | Path) -> PipelineConfig:
    """The `PipelineConfig` a run was made with, read from `{run_dir}/pipeline.resolved.yaml`.

    Raises:
        TTPValidationError: `run_dir` is not a directory, has no resolved config, or the config no longer
            validates (a run made by an older version).
    """
    from ttp_ray.pipeline_config import load_pipeline_config

    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise TTPValidationError(f"run directory not found: {run} (make one with `make demo` or `ttp pipeline`)",
                                 parameter="run_dir", value=str(run))
    resolved = run / RESOLVED_CONFIG
    if not resolved.is_file():
        raise TTPValidationError(f"{run} is not a pipeline run: no {RESOLVED_CONFIG} (written by `make demo` / "
                                 "`ttp pipeline`)", parameter="run_dir", value=str(run))
    try:
        return load_pipeline_config(resolved)
    except (TTPValidationError, ValidationError) as e:
        why = "; ".join(part.strip() for part in str(e).splitlines() if part.strip())
        raise TTPValidationError(f"{resolved} does not validate with this version of ttp-ray: {why}",
                                 parameter="run_dir", value=str(run)) from None


def serving_config_from_run(run_dir: str | Path, dataset: str | None, *, variant: str = "user-prob",
                            host: str = "127.0.0.1", port: int = 8000,
                            overrides: list[str] | None = None) -> ServingConfig:
    """Serve `dataset` of the run in `run_dir`: its RM `variant` and the run's policy over its users' profiles.

    Args:
        run_dir: a pipeline run directory (`runs/demo`); it may have moved since the run, paths are taken from here.
        dataset: one of the run's dataset names; None raises with the list of them.
        variant: RM variant (`global-det`, `global-prob`, `user-det`, `user-prob`).
        host, port: where Serve's HTTP proxy binds.
        overrides: dotted `key=value` overrides of the derived `ServingConfig` (e.g. `default_n=4`); `auth.*` is
            refused, the caller generates the token.

    Returns:
        A validated `ServingConfig`: `rm_dir` and `policy.profile_path` absolute, `policy.engine` / `policy.rag`
        the run's `generation.engine` / `generation.policy`, `default_n` its `n_candidates` (at most `bounds.max_n`).

    Raises:
        TTPValidationError: the run, the dataset, its data or the checkpoint is missing; an override is invalid.
    """
    run = Path(run_dir).expanduser()
    cfg = load_run_config(run)
    names = [d.name for d in cfg.datasets]
    if dataset is None:
        raise TTPValidationError(f"--dataset is required with --run-dir: {run} has {names}", parameter="dataset")
    if dataset not in names:
        raise TTPValidationError(f"no dataset {dataset!r} in {run}: it has {names}", parameter="dataset",
                                 value=dataset)
    variants = list(get_args(RmVariant))
    if variant not in variants:
        raise TTPValidationError(f"`variant` must be one of {variants}, got {variant!r}", parameter="variant",
                                 value=variant)

    data_dir = run / "data" / dataset
    summary = data_dir / "summary.json"
    if not summary.is_file() or not (data_dir / "profile.parquet").is_file():
        raise TTPValidationError(f"dataset {dataset!r} has no data in {data_dir} (skipped as optional, or the run "
                                 "stopped before its data stage)", parameter="dataset", value=dataset)
    rm_dir = run / "rm" / dataset
    if not (rm_dir / variant / "manifest.json").is_file():
        have = sorted(p.name for p in rm_dir.iterdir()  # hidden names are the versions behind the variants
                      if not p.name.startswith(".") and (p / "manifest.json").is_file()) if rm_dir.is_dir() else []
        raise TTPValidationError(f"no {variant!r} reward model in {rm_dir} (found {have}); finish the run's train "
                                 f"stage (`ttp train --config {run / RESOLVED_CONFIG} --dataset {dataset}`)",
                                 parameter="variant", value=variant)

    gen = cfg.generation
    section = {
        "rm_dir": str(rm_dir.absolute()),
        "rm_variant": variant,
        "default_n": min(gen.n_candidates, BoundsConfig().max_n),
        "policy": {
            "engine": gen.engine.model_dump(mode="json"),
            "rag": gen.policy.model_dump(mode="json"),
            "profile_path": str((data_dir / "profile.parquet").absolute()),
            "task": str(json.loads(summary.read_text())["task"]),
            "num_cpus": gen.actors.num_cpus,  # also the engine's threads on CPU nodes, as in the generate stage
            "num_gpus": gen.actors.num_gpus,
        },
        "ingress": {"num_cpus": INGRESS_CPUS},
        "scorer": {"num_cpus": SCORER_CPUS},
        "host": host,
        "port": port,
    }
    apply_overrides(section, overrides)
    out = validate(ServingConfig, section, source=f"{run / RESOLVED_CONFIG} (dataset {dataset!r})")
    if out.auth != AuthConfig():
        raise TTPValidationError("with --run-dir the API token is generated at start; `auth.*` cannot be set "
                                 "(serve with your own token through --config and `auth.token_env` / "
                                 "`auth.token_file`)", parameter="auth")
    return out


def required_cpus(cfg: ServingConfig) -> float:
    """Logical CPUs the deployments of `cfg` reserve at their initial replica counts."""
    def replicas(section: DeploymentSection) -> int:
        a = section.autoscaling
        return section.num_replicas if a is None else max(a.min_replicas, a.initial_replicas or 0, 1)

    sections = [cfg.ingress, cfg.scorer] + ([cfg.policy] if cfg.policy is not None else [])
    return sum(s.num_cpus * replicas(s) for s in sections)


def example_request(run_dir: str | Path, dataset: str) -> tuple[str, str]:
    """A `(user_id, query)` of the dataset for the usage lines `ttp serve` prints: its first user and their first
    query, the query cut to shell- and Python-quote-safe characters (at most 60)."""
    import pyarrow.parquet as pq

    data_dir = Path(run_dir).expanduser() / "data" / dataset
    users = pq.read_table(data_dir / "users.parquet", columns=["user_id"]).column("user_id").to_pylist()
    user = users[0] if users else "<user id>"
    query = ""
    if (data_dir / "queries.parquet").is_file():
        q = pq.read_table(data_dir / "queries.parquet", columns=["user_id", "query_text"]).to_pylist()
        query = next((r["query_text"] or "" for r in q if r["user_id"] == user), "")
    query = " ".join(re.sub(r"[^A-Za-z0-9 .,:;()+_/-]", " ", query).split())[:60].strip()
    return user, query or "Hello"


def usage_text(cfg: ServingConfig, run_dir: str | Path, dataset: str, token: str, user: str, query: str) -> str:
    """What `ttp serve --run-dir` prints once the endpoint is up: where, what, the token (the only place it is ever
    shown) as an `export` line, then a curl and an `openai` client call that read it from the environment."""
    assert cfg.policy is not None
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    base = f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}/v1"
    model, messages = cfg.served_model_name, json.dumps([{"role": "user", "content": query}])
    body = json.dumps({"model": model, "user": user, "messages": [{"role": "user", "content": query}]})
    return "\n".join([
        f"ttp serve: dataset {dataset!r} of {run_dir} is served at {base} (Ctrl-C stops it)",
        f"ttp serve: reward model {cfg.rm_variant}, policy {cfg.policy.engine.model} ({cfg.policy.engine.backend}), "
        f"best of {cfg.default_n} candidates per request",
        "ttp serve: API token (shown only here, new at every start); export it where you call from:",
        f"export {cfg.auth.token_env}={token}",
        f"curl -s {base}/chat/completions -H \"Authorization: Bearer ${cfg.auth.token_env}\" \\",
        f"  -H 'Content-Type: application/json' -d '{body}'",
        "python - <<'EOF'",
        "import os, openai",
        f"client = openai.OpenAI(base_url=\"{base}\", api_key=os.environ[\"{cfg.auth.token_env}\"])",
        f"reply = client.chat.completions.create(model=\"{model}\", user=\"{user}\", messages={messages})",
        "print(reply.choices[0].message.content)",
        "EOF",
    ])
