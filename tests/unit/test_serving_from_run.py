"""`ttp serve --run-dir`: the ServingConfig derived from a run directory, its errors, and what it prints.

No Ray: a fake run directory (resolved tiny config, data summaries, a symlinked RM checkpoint) is enough, and every
CLI case here fails before Ray would start. The endpoint itself is exercised in
tests/integration/test_pipeline_e2e.py on the tiny pipeline's real run directory.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ttp_ray.cli import app
from ttp_ray.config import dump_resolved
from ttp_ray.errors import TTPValidationError
from ttp_ray.pipeline_config import load_pipeline_config
from ttp_ray.serving.config import AuthConfig
from ttp_ray.serving.from_run import (
    RESOLVED_CONFIG,
    example_request,
    required_cpus,
    serving_config_from_run,
    usage_text,
)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "configs" / "tiny.yaml"
TOKEN = "tok-" + "x" * 40


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """What the tiny pipeline leaves for `tiny-policy` (data + a user-prob checkpoint); `tiny-sim` has no data."""
    run = tmp_path / "run"
    dump_resolved(load_pipeline_config(TINY, [f"run_dir={run}"]), run, RESOLVED_CONFIG)
    data = run / "data" / "tiny-policy"
    data.mkdir(parents=True)
    (data / "summary.json").write_text(json.dumps({"name": "tiny-policy", "task": "synthetic_headline"}))
    pq.write_table(pa.table({"user_id": ["u1", "u0"], "input": ["a", "b"]}), data / "profile.parquet")
    pq.write_table(pa.table({"user_id": ["u1", "u0"]}), data / "users.parquet")
    pq.write_table(pa.table({"user_id": ["u0", "u1"], "query_text": ["other's query", "Files: a.py 'quoted' $HOME\nx"]}),
                   data / "queries.parquet")
    version = run / "rm" / "tiny-policy" / ".user-prob.v1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text("{}")
    (run / "rm" / "tiny-policy" / "user-prob").symlink_to(".user-prob.v1")
    return run


def test_config_is_the_runs_policy_and_rm(run_dir: Path) -> None:
    cfg = serving_config_from_run(run_dir, "tiny-policy", port=8123)
    assert cfg.rm_dir == str(run_dir / "rm" / "tiny-policy") and cfg.rm_variant == "user-prob"
    assert cfg.host == "127.0.0.1" and cfg.port == 8123 and cfg.auth == AuthConfig()
    p = cfg.policy
    assert p is not None and p.task == "synthetic_headline"
    assert p.profile_path == str(run_dir / "data" / "tiny-policy" / "profile.parquet")
    # tiny.yaml's generation section, as the run used it
    assert p.engine.backend == "hf" and p.engine.sampling.max_tokens == 8 and p.engine.sampling.temperature == 0.9
    assert p.rag.retrieval.k == 2 and p.rag.max_prompt_tokens == 384 and p.num_cpus == 1.0
    assert cfg.default_n == 4  # generation.n_candidates
    assert required_cpus(cfg) == pytest.approx(1.5)


def test_a_moved_run_is_served_from_where_it_is_now(run_dir: Path) -> None:
    moved = run_dir.parent / "moved"
    shutil.move(run_dir, moved)  # the resolved config still names the old run_dir
    cfg = serving_config_from_run(moved, "tiny-policy")
    assert cfg.rm_dir == str(moved / "rm" / "tiny-policy")
    assert cfg.policy is not None and cfg.policy.profile_path.startswith(str(moved))


def test_overrides_apply_but_auth_is_generated(run_dir: Path) -> None:
    cfg = serving_config_from_run(run_dir, "tiny-policy", overrides=["default_n=2", "bounds.max_n=3"])
    assert cfg.default_n == 2 and cfg.bounds.max_n == 3
    with pytest.raises(TTPValidationError, match="token is generated"):
        serving_config_from_run(run_dir, "tiny-policy", overrides=["auth.token_file=/etc/ttp/token"])
    with pytest.raises(TTPValidationError, match=r"unknown keys: \['polcy'\]"):
        serving_config_from_run(run_dir, "tiny-policy", overrides=["polcy=1"])


@pytest.mark.parametrize(
    ("where", "dataset", "variant", "match"),
    [
        ("missing", "tiny-policy", "user-prob", "run directory not found"),
        ("empty", "tiny-policy", "user-prob", "is not a pipeline run: no pipeline.resolved.yaml"),
        ("run", None, "user-prob", r"--dataset is required with --run-dir: .* has \['tiny-policy', 'tiny-sim'\]"),
        ("run", "commits", "user-prob", r"no dataset 'commits' in .*: it has \['tiny-policy', 'tiny-sim'\]"),
        ("run", "tiny-sim", "user-prob", "dataset 'tiny-sim' has no data in"),
        ("run", "tiny-policy", "user-det", r"no 'user-det' reward model in .* \(found \['user-prob'\]\)"),
        ("run", "tiny-policy", "user-probb", r"`variant` must be one of \['global-det'"),
    ],
)
def test_what_is_missing_is_named(run_dir: Path, where: str, dataset: str | None, variant: str, match: str) -> None:
    path = {"missing": run_dir.parent / "nope", "empty": run_dir / "data", "run": run_dir}[where]
    with pytest.raises(TTPValidationError, match=match):
        serving_config_from_run(path, dataset, variant=variant)


def test_a_run_of_an_older_schema_is_one_clear_error(run_dir: Path) -> None:
    resolved = run_dir / RESOLVED_CONFIG
    resolved.write_text(resolved.read_text() + "retired_section: {a: 1}\n")
    with pytest.raises(TTPValidationError, match=r"does not validate with this version.*retired_section"):
        serving_config_from_run(run_dir, "tiny-policy")


def test_usage_shows_the_token_once_and_runnable_calls(run_dir: Path) -> None:
    cfg = serving_config_from_run(run_dir, "tiny-policy", host="0.0.0.0", port=8123)
    user, query = example_request(run_dir, "tiny-policy")
    assert (user, query) == ("u1", "Files: a.py quoted HOME x")  # first user, their query, quote-safe
    text = usage_text(cfg, run_dir, "tiny-policy", TOKEN, user, query)
    assert text.count(TOKEN) == 1
    assert re.search(rf"^export TTP_API_TOKEN={TOKEN}$", text, re.M)
    assert "http://127.0.0.1:8123/v1" in text  # a wildcard bind is called on loopback
    body = re.search(r"-d '(.*)'$", text, re.M)
    assert body and json.loads(body.group(1))["user"] == "u1"
    lines = text.splitlines()
    script = "\n".join(lines[lines.index("python - <<'EOF'") + 1:lines.index("EOF")])
    compile(script, "<usage>", "exec")  # the printed client snippet is valid Python
    assert "openai.OpenAI(base_url=\"http://127.0.0.1:8123/v1\", api_key=os.environ[\"TTP_API_TOKEN\"])" in script


# --------------------------------------------------------------------------------------- CLI (fails before Ray)
def _serve(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["serve", *args])
    return res.exit_code, res.stderr


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([], "give exactly one of --run-dir"),
        (["--run-dir", "{run}", "--config", "x.yaml"], "give exactly one of --run-dir"),
        (["--run-dir", "{run}"], "--dataset is required with --run-dir"),
        (["--run-dir", "{run}/../nope", "--dataset", "tiny-policy"], "run directory not found"),
        (["--run-dir", "{run}", "--dataset", "tiny-policy", "--variant", "global-det"], "no 'global-det' reward model"),
        (["--config", str(REPO / "cluster" / "serve_config.yaml")], "is a Ray Serve config: run it with `serve run"),
        (["--config", str(REPO / "cluster" / "serve_config.yaml"), "--dataset", "commits"], "go with --run-dir"),
    ],
)
def test_cli_errors_are_one_line_exit_2(run_dir: Path, args: list[str], match: str) -> None:
    code, err = _serve(*(a.replace("{run}", str(run_dir)) for a in args))
    assert code == 2, err
    assert err.startswith("ttp: error: ") and err.count("\n") == 1 and match in err, err


def test_shipped_serve_config_serves_the_demos_commits_run(tmp_path: Path) -> None:
    """cluster/serve_config.yaml names what `make demo` writes: its args are what `ttp serve --run-dir` derives for
    the demo's `commits` dataset (paths under /shared/runs/demo, the demo's policy settings)."""
    import yaml

    demo = load_pipeline_config(REPO / "ttp_ray" / "configs" / "demo.yaml")
    assert "commits" in [d.name for d in demo.datasets]
    run = tmp_path / "demo"
    dump_resolved(load_pipeline_config(REPO / "ttp_ray" / "configs" / "demo.yaml", [f"run_dir={run}"]), run,
                  RESOLVED_CONFIG)
    (run / "data" / "commits").mkdir(parents=True)
    (run / "data" / "commits" / "summary.json").write_text(json.dumps({"name": "commits", "task": "commit_subject"}))
    (run / "data" / "commits" / "profile.parquet").write_bytes(b"")
    (run / "rm" / "commits" / "user-prob").mkdir(parents=True)
    (run / "rm" / "commits" / "user-prob" / "manifest.json").write_text("{}")
    derived = serving_config_from_run(run, "commits")

    (app_cfg,) = yaml.safe_load((REPO / "cluster" / "serve_config.yaml").read_text())["applications"]
    shipped = app_cfg["args"]
    root = "/shared/runs/demo"
    assert shipped["rm_dir"] == derived.rm_dir.replace(str(run), root) == f"{root}/rm/commits"
    assert shipped["policy"]["profile_path"] == derived.policy.profile_path.replace(str(run), root)
    assert shipped["rm_variant"] == derived.rm_variant and shipped["policy"]["task"] == derived.policy.task
    from ttp_ray.serving.config import PolicySection

    policy = PolicySection.model_validate(shipped["policy"])
    assert policy.engine == derived.policy.engine and policy.rag == derived.policy.rag
