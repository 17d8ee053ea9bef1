"""Static checks of everything under cluster/ plus the upload package `ray job submit --working-dir .` builds.

No cluster is started: manifests are parsed with yaml.safe_load and checked against what KubeRay, the cluster
launcher (Ray's own ray-schema.json) and Ray Serve (its ServeDeploySchema) require, and against this repo
(entrypoint scripts, configs, the Serve import path). Security: every cluster config turns on Ray token auth
(anyone who reaches an unauthenticated dashboard can submit a job, i.e. run code), keeps the dashboard off
public interfaces unless auth is on, and Serve is reachable from outside only through TLS. Checks that depend
on files other stages have not written yet skip with the missing path as the reason.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import re
import shlex
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
DASHBOARD_UPLOAD_CAP = 100 * 1024**2  # ray._private.ray_constants.DASHBOARD_CLIENT_MAX_SIZE
SERVE_IMPORT_PATH = "ttp_ray.serving.app:build_app"
# One RayJob per batch stage, running `python jobs/<script>.py --config ...`.
STAGE_SCRIPTS = {
    "generate": "generate_candidates.py",
    "train": "train_reward_models.py",
    "tune": "tune_variance_head.py",
    "evaluate": "evaluate.py",
    "pipeline": "pipeline.py",
}
NEVER_UPLOADED = (".git/HEAD", ".venv/bin/python", "runs/demo/report.json", ".cache/x/y.bin", "ttp_ray/__pycache__/a.pyc")

ALL_YAML = sorted(CLUSTER.rglob("*.yaml"))
KUBERAY_YAML = sorted(KUBERAY.glob("*.yaml"))  # the ray.io resources; kuberay/ingress/ holds plain Kubernetes ones
SERVE_INGRESS = KUBERAY / "ingress" / "serve-tls.yaml"
RAY_TOKEN_SECRET = "ttp-ray-auth"  # the Secret (key `auth_token`) every KubeRay manifest takes Ray's token from
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _load(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def _kuberay_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, _load(p)) for p in KUBERAY_YAML]


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    kind = doc["kind"]
    if kind == "RayCluster":
        return doc["spec"]
    if kind == "RayJob":
        return doc["spec"]["rayClusterSpec"]
    if kind == "RayService":
        return doc["spec"]["rayClusterConfig"]
    raise AssertionError(f"unexpected kind {kind}")


def _pod_groups(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    return groups


# ------------------------------------------------------------------------------------------------ every file
def test_cluster_dir_has_the_expected_files() -> None:
    names = {p.relative_to(CLUSTER).as_posix() for p in ALL_YAML}
    expected = {"cluster.yaml", "runtime_env.yaml", "kuberay/raycluster.yaml", "kuberay/rayservice.yaml",
                "kuberay/ingress/serve-tls.yaml"}
    expected |= {f"kuberay/rayjob-{stage}.yaml" for stage in STAGE_SCRIPTS}
    assert expected <= names, f"missing: {sorted(expected - names)}"


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_every_yaml_parses_to_a_mapping(path: Path) -> None:
    with path.open() as f:
        docs = list(yaml.safe_load_all(f))
    assert docs and all(isinstance(d, dict) and d for d in docs), f"{path}: every document must be a mapping"


# ------------------------------------------------------------------------------------------------ KubeRay
@pytest.mark.parametrize(("name", "doc"), _kuberay_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_cluster_spec(name: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "ray.io/v1", name
    assert doc["kind"] in {"RayCluster", "RayJob", "RayService"}, name
    assert doc["metadata"]["name"], name
    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__, f"{name}: rayVersion must match the installed Ray"
    assert spec["workerGroupSpecs"], f"{name}: no worker groups"

    images = set()
    gpu_groups = 0
    for group_name, group in _pod_groups(spec):
        pod = group["template"]["spec"]
        containers = pod["containers"]
        assert len({c["name"] for c in containers}) == len(containers), f"{name}/{group_name}: duplicate names"
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for c in containers:
            assert c.get("image"), f"{name}/{group_name}: container {c['name']} has no image"
            images.add(c["image"])
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= volumes, f"{name}/{group_name}: mounts {sorted(mounts - volumes)} have no volume"
            for e in c.get("env", []):
                assert isinstance(e.get("value", ""), str), f"{name}/{group_name}: env {e['name']} must be a string"
        if group_name == "head":
            continue
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{name}/{group_name}"
        limits = containers[0]["resources"]["limits"]
        requests = containers[0]["resources"].get("requests", {})
        if group_name.startswith("gpu"):
            gpu_groups += 1
            assert int(limits["nvidia.com/gpu"]) >= 1, f"{name}/{group_name}: GPU group without nvidia.com/gpu"
            assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
            assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), name
        else:
            assert "nvidia.com/gpu" not in limits, f"{name}/{group_name}: only gpu* groups request GPUs"
    assert gpu_groups >= 1, f"{name}: paper scale needs a GPU worker group"
    assert len(images) == 1, f"{name}: head and workers must run the same image, got {sorted(images)}"
    (image,) = images
    assert f"ray{ray.__version__}" in image, f"{name}: image tag should name the Ray version: {image}"
    if spec.get("enableInTreeAutoscaling"):
        assert any(g["maxReplicas"] > g["minReplicas"] for _, g in _pod_groups(spec)[1:]), name


class _Unknown:
    """Stands in for a module-level name a job's `make_parser` uses (a list of choices, a default): it is
    empty when iterated, contains everything and returns itself, so argparse accepts any value for it."""

    def __iter__(self) -> Any:
        return iter(())

    def __contains__(self, item: object) -> bool:
        return True

    def __call__(self, *args: Any, **kwargs: Any) -> _Unknown:
        return self

    def __getattr__(self, name: str) -> _Unknown:
        return self

    def __getitem__(self, key: object) -> _Unknown:
        return self

    def __str__(self) -> str:
        return ""


class _Globals(dict):
    def __missing__(self, key: str) -> Any:
        return _Unknown()


def _job_parser(script: Path) -> argparse.ArgumentParser | None:
    """The job's own `make_parser()`, built from its source alone (None if the script has none).

    Importing a job module pulls in Ray and its stage package (seconds each); the parser needs only argparse
    and the module docstring. Other module-level names it uses become `_Unknown` stand-ins.
    """
    tree = ast.parse(script.read_text(), filename=str(script))
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_parser"), None)
    if fn is None:
        return None
    namespace = _Globals(argparse=argparse, __doc__=ast.get_docstring(tree) or "", __builtins__=__builtins__)
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(script), "exec"), namespace)
    return namespace["make_parser"]()


@pytest.mark.parametrize("stage", sorted(STAGE_SCRIPTS))
def test_rayjob_per_stage(stage: str) -> None:
    doc = _load(KUBERAY / f"rayjob-{stage}.yaml")
    spec = doc["spec"]
    assert doc["kind"] == "RayJob"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0

    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["working_dir"].startswith("local:///"), "the code comes from the image, nothing to upload"
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    base = _load(RUNTIME_ENV)["env_vars"]
    assert base.items() <= env["env_vars"].items(), "RayJob env_vars must include cluster/runtime_env.yaml's"

    commands = [shlex.split(c) for c in spec["entrypoint"].split("&&")]  # the entrypoint runs in a shell
    missing: list[str] = []
    for argv in commands:
        assert argv[:2] == ["python", f"jobs/{STAGE_SCRIPTS[stage]}"], spec["entrypoint"]
        assert "--config" in argv, f"{stage}: every entrypoint takes --config"
        paths = [a.split("=", 1)[-1] for a in argv[2:] if a.split("=", 1)[-1].startswith("/")]
        assert paths and all(p.startswith("/mnt/ttp/") for p in paths), f"{stage}: outputs go to the shared volume"
        script, config = REPO / argv[1], REPO / argv[argv.index("--config") + 1]
        missing += [str(p.relative_to(REPO)) for p in (script, config) if not p.is_file()]
        if script.is_file():
            parser = _job_parser(script)
            if parser is not None:
                try:
                    parser.parse_args(argv[2:])
                except SystemExit:
                    pytest.fail(f"rayjob-{stage}.yaml: {argv[1]} rejects its arguments: {' '.join(argv[2:])}")
    if missing:
        pytest.skip(f"{', '.join(sorted(set(missing)))} not present yet (the integrator adds it)")


def test_rayservice_serve_config() -> None:
    doc = _load(KUBERAY / "rayservice.yaml")
    assert doc["kind"] == "RayService"
    serve_cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_cfg)  # what `serve deploy` and KubeRay accept
    (app,) = serve_cfg["applications"]
    assert app["import_path"] == SERVE_IMPORT_PATH
    assert app["runtime_env"]["working_dir"].startswith("local:///")
    assert serve_cfg["http_options"]["host"] == "0.0.0.0"

    shared = CLUSTER / "serve_config.yaml"
    if shared.is_file():  # the serving stage's config for `serve run/deploy`: the same application
        paths = {a["import_path"] for a in _load(shared)["applications"]}
        assert paths == {SERVE_IMPORT_PATH}, f"{shared.name} serves {paths}"

    if not (REPO / "ttp_ray" / "serving" / "app.py").is_file():
        pytest.skip("ttp_ray/serving/app.py not present yet")
    module, attr = SERVE_IMPORT_PATH.split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    from ttp_ray.config import validate
    from ttp_ray.serving.config import ServingConfig

    cfg = validate(ServingConfig, app["args"], source="rayservice.yaml serveConfigV2 args")
    assert cfg.scorer.num_gpus == 1 and cfg.policy is not None and cfg.policy.num_gpus == 1
    assert cfg.auth.token_env == "TTP_API_TOKEN" and not cfg.auth.allow_unauthenticated
    pod_env = {e["name"] for _, g in _pod_groups(doc["spec"]["rayClusterConfig"])
               for e in g["template"]["spec"]["containers"][0]["env"]}
    assert "TTP_API_TOKEN" in pod_env, "every pod needs the token (replicas may land anywhere)"


# ------------------------------------------------------------------------------------------------ launcher
def test_cluster_launcher_config_matches_ray_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    cfg = _load(CLUSTER / "cluster.yaml")
    jsonschema.validate(cfg, schema)  # unknown keys are errors there too

    assert f"ray{ray.__version__}" in cfg["docker"]["image"]
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu = types["gpu"]
    assert gpu["min_workers"] < gpu["max_workers"] <= cfg["max_workers"], "the GPU group must autoscale"
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--num-cpus=0" in head_start
    assert "--address=$RAY_HEAD_IP" in " ".join(cfg["worker_start_ray_commands"])
    assert any(ray.__version__ in c for c in cfg["setup_commands"]), "setup must check the Ray version"
    for remote, local in cfg["file_mounts"].items():
        if local.startswith("~"):  # a file of the user's own machine (the Ray token), never one of the repo
            continue
        assert (REPO / local).is_file(), f"file_mounts {remote}: {local} does not exist"


# ------------------------------------------------------------------------------------------------ security
def _walk(node: Any) -> Any:
    """Every mapping inside a parsed YAML document (serveConfigV2/runtimeEnvYAML strings are parsed too)."""
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key in {"serveConfigV2", "runtimeEnvYAML"} and isinstance(value, str):
                value = yaml.safe_load(value)
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _env_turns_auth_on(env: list[dict[str, Any]]) -> bool:
    by_name = {e["name"]: e for e in env}
    token = by_name.get("RAY_AUTH_TOKEN", {})
    return (by_name.get("RAY_AUTH_MODE", {}).get("value") == "token"
            and "secretKeyRef" in token.get("valueFrom", {}))


def _kuberay_auth(spec: dict[str, Any]) -> str | None:
    """How a RayCluster spec turns Ray token auth on: 'authOptions', 'env' (every Ray container), or None."""
    if (spec.get("authOptions") or {}).get("mode") == "token":
        return "authOptions"
    ray_containers = [g["template"]["spec"]["containers"][0] for _, g in _pod_groups(spec)]
    if all(_env_turns_auth_on(c.get("env", [])) for c in ray_containers):
        return "env"
    return None


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_no_config_disables_auth_or_holds_a_token(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"RAY_AUTH_MODE\W+disabled", text), f"{path.name} turns Ray token auth off"
    for doc in yaml.safe_load_all(text):
        assert doc.get("kind") != "Secret", f"{path.name}: Secrets are created with kubectl, never committed"
        for m in _walk(doc):
            if m.get("name") in {"RAY_AUTH_TOKEN", "TTP_API_TOKEN"}:
                assert "value" not in m, f"{path.name}: {m['name']} must come from a Secret (valueFrom)"


@pytest.mark.parametrize(("name", "doc"), _kuberay_docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_manifest_turns_on_token_auth(name: str, doc: dict[str, Any]) -> None:
    spec = _cluster_spec(doc)
    how = _kuberay_auth(spec)
    assert how is not None, (f"{name}: Ray token auth is off; set spec authOptions {{mode: token, secretName: "
                             f"{RAY_TOKEN_SECRET}}} (KubeRay >= 1.6) or RAY_AUTH_MODE/RAY_AUTH_TOKEN on every pod")
    if how == "authOptions":
        assert spec["authOptions"].get("secretName") == RAY_TOKEN_SECRET, f"{name}: one token for every manifest"

    head = spec["headGroupSpec"]
    host = head["rayStartParams"].get("dashboard-host", "0.0.0.0")  # KubeRay's default binds every interface
    assert host in LOOPBACK or how is not None, f"{name}: dashboard on {host} without auth"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{name}: the head service must not leave the cluster"
    assert not head.get("enableIngress"), f"{name}: no Ingress for the dashboard"


def _launcher_env(cfg: dict[str, Any], command: str) -> dict[str, str]:
    """Environment a `ray start` line of the cluster launcher sees: `docker run -e` plus its own prefix."""
    env = dict(re.findall(r"(?:^|\s)-e\s+([A-Z_]+)=(\S+)", " ".join(cfg.get("docker", {}).get("run_options", []))))
    env.update(re.findall(r"(?:^|[\s;])([A-Z_]+)=(\S+)(?=\s)", command.split("ray start", 1)[0] + " "))
    return env


def test_cluster_launcher_turns_on_token_auth() -> None:
    cfg = _load(CLUSTER / "cluster.yaml")
    starts = [(kind, c) for kind in ("head_start_ray_commands", "worker_start_ray_commands")
              for c in cfg[kind] if "ray start" in c]
    assert {k for k, _ in starts} == {"head_start_ray_commands", "worker_start_ray_commands"}
    for kind, command in starts:
        assert _launcher_env(cfg, command).get("RAY_AUTH_MODE") == "token", f"{kind}: Ray token auth is off"
    tokens = {remote: local for remote, local in cfg["file_mounts"].items() if remote.endswith(".ray/auth_token")}
    assert tokens, "every node needs the token: file_mounts ~/.ray/auth_token (made by `ray get-auth-token --generate`)"
    for local in tokens.values():
        assert local.startswith(("~", "/")) and not (REPO / local).exists(), "the token never lives in the repo"

    (head,) = [c for k, c in starts if k == "head_start_ray_commands"]
    m = re.search(r"--dashboard-host[= ](\S+)", head)
    host = m.group(1) if m else "localhost"  # `ray start`'s default
    auth = _launcher_env(cfg, head).get("RAY_AUTH_MODE") == "token"
    assert host in LOOPBACK or auth, f"dashboard on {host} without auth"
    assert host in LOOPBACK, "the launcher's dashboard is reached through `ray dashboard`'s SSH tunnel: bind loopback"


def test_serve_is_reachable_from_outside_only_through_tls() -> None:
    serve_cfg = _load(CLUSTER / "serve_config.yaml")["http_options"]
    assert serve_cfg.get("host", "127.0.0.1") in LOOPBACK or (serve_cfg.get("ssl_certfile")
                                                              and serve_cfg.get("ssl_keyfile")), \
        "serve_config.yaml: bind loopback behind a TLS proxy, or give Serve ssl_certfile/ssl_keyfile"

    service = _load(KUBERAY / "rayservice.yaml")
    port = yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"]
    ingress = _load(SERVE_INGRESS)
    assert (ingress["apiVersion"], ingress["kind"]) == ("networking.k8s.io/v1", "Ingress")
    tls = ingress["spec"]["tls"]
    assert tls and all(t["secretName"] and t["hosts"] for t in tls), "the Ingress must terminate TLS"
    tls_hosts = {h for t in tls for h in t["hosts"]}
    annotations = ingress["metadata"].get("annotations", {})
    assert annotations.get("nginx.ingress.kubernetes.io/ssl-redirect") == "true", "plain HTTP must not reach Serve"
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls_hosts, f"{rule['host']} is served without TLS"
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == f"{service['metadata']['name']}-serve-svc", "only Serve goes behind the Ingress"
            assert backend["port"]["number"] == port


def test_docs_tell_how_to_make_the_tokens_and_terminate_tls() -> None:
    docs = (REPO / "docs" / "cluster.md").read_text()
    assert f"kubectl create secret generic {RAY_TOKEN_SECRET} --from-literal=auth_token=" in docs
    assert "ray get-auth-token --generate" in docs and "RAY_AUTH_MODE=token" in docs
    assert SERVE_INGRESS.relative_to(REPO).as_posix() in docs and "TLS" in docs


# ------------------------------------------------------------------------------------------------ upload
def test_runtime_env_file() -> None:
    env = _load(RUNTIME_ENV)
    assert set(env) <= {"env_vars", "excludes", "pip", "py_modules", "working_dir"}
    assert "working_dir" not in env, "pass --working-dir on the command line"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env["env_vars"].items())
    assert env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    assert "DS_ACCELERATOR" not in env["env_vars"], "each node chooses its DeepSpeed accelerator"
    assert {".git/", ".venv/", "runs/"} <= set(env["excludes"])
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray's own validation


def _would_skip(rel: str, *, include_gitignore: bool, excludes: list[str]) -> bool:
    """Ray's walk skips a path when the path or any parent matches an ignore rule of the repo root."""
    from ray._private.runtime_env.packaging import _get_excludes, get_excludes_from_ignore_files

    rules = [_get_excludes(REPO, excludes), *get_excludes_from_ignore_files(REPO, include_gitignore=include_gitignore)]
    parts = Path(rel).parts
    return any(rule(REPO.joinpath(*parts[:i])) for i in range(1, len(parts) + 1) for rule in rules)


@pytest.mark.parametrize("rel", NEVER_UPLOADED)
@pytest.mark.parametrize("include_gitignore", [True, False], ids=["gitignore", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1"])
def test_rayignore_alone_keeps_heavy_dirs_out(rel: str, include_gitignore: bool) -> None:
    assert _would_skip(rel, include_gitignore=include_gitignore, excludes=[]), f"{rel} would be uploaded"
    assert not _would_skip("ttp_ray/config.py", include_gitignore=include_gitignore, excludes=[])


@pytest.mark.parametrize("with_runtime_env", [True, False], ids=["runtime_env.yaml", "bare --working-dir"])
def test_upload_package_is_small_and_complete(tmp_path: Path, with_runtime_env: bool) -> None:
    """Build the exact zip `ray job submit --working-dir .` uploads and check its size and contents."""
    from ray._private.runtime_env.packaging import create_package

    excludes = _load(RUNTIME_ENV)["excludes"] if with_runtime_env else []
    pkg = tmp_path / "pkg.zip"
    create_package(str(REPO), pkg, include_gitignore=os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE") != "1",
                   excludes=excludes)
    size = pkg.stat().st_size
    assert size < DASHBOARD_UPLOAD_CAP, f"upload is {size / 2**20:.1f} MiB; Ray's cap is 100 MiB"
    with zipfile.ZipFile(pkg) as z:
        names = set(z.namelist())
        unpacked = sum(i.file_size for i in z.infolist())
    assert unpacked < DASHBOARD_UPLOAD_CAP
    for heavy in (".git/", ".venv/", "runs/", ".cache/"):
        assert not any(n.startswith(heavy) for n in names), f"{heavy} is in the upload"
    assert not any("/__pycache__/" in f"/{n}" for n in names)
    assert {"ttp_ray/__init__.py", "cluster/runtime_env.yaml", "tests/fixtures/cluster/hello_job.py"} <= names

    try:  # every Python/YAML file git would keep must be uploaded (the ignore files drop no code)
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, text=True, check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return
    code = {f for f in listed if f.endswith((".py", ".yaml", ".toml")) and (REPO / f).is_file()}
    assert not code - names, f"code missing from the upload: {sorted(code - names)[:10]}"


def test_job_parser_extraction_checks_arguments() -> None:
    parser = _job_parser(REPO / "tests" / "fixtures" / "cluster" / "cli_job.py")
    assert parser is not None and parser.prog == "cli_job"
    args = parser.parse_args(["--config", "c.yaml", "--run-dir", "/mnt/ttp/r", "--mode", "eval", "a.b=1"])
    assert (args.config, args.run_dir, args.overrides) == ("c.yaml", "/mnt/ttp/r", ["a.b=1"])
    assert args.mode == "eval"  # `MODES` is a module-level name: a stand-in that accepts any value
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", "c.yaml", "--set", "run_dir=/mnt/ttp/r"])  # no --set, no --run-dir
    assert _job_parser(REPO / "tests" / "fixtures" / "cluster" / "hello_job.py") is None  # no make_parser
