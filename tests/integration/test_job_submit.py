"""`ray job submit` end to end against a real local head node that this module starts and stops.

The head gets free ports for every service and its own --temp-dir, so it coexists with other Ray clusters on
the machine (the session `ray_session` fixture, other people's tests). Nothing here sets RAY_ADDRESS in this
process, and the head is stopped by process group and temp dir: `ray stop` would stop every Ray on the machine.

The jobs run with cluster/runtime_env.yaml, as docs/cluster.md tells people to submit them:
- `hello_job` (tests/fixtures/cluster/hello_job.py) proves the upload path: the driver and a worker both
  import `ttp_ray` from the uploaded snapshot (the working dir is first on PYTHONPATH), and `init_ray()` attaches
  to the job's cluster without a runtime-env conflict;
- the same job with `working_dir: local://<repo>` is the KubeRay path (code baked into the image, nothing uploaded);
- `jobs/pipeline.py` on the tiny config writes report.json, candidates and scores under run_dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: `ray`, and the `python` a job's entrypoint resolves
RAY = str(BIN / "ray")
HELLO = "tests/fixtures/cluster/hello_job.py"
PIPELINE = REPO / "jobs" / "pipeline.py"
TINY = REPO / "tests" / "fixtures" / "configs" / "tiny.yaml"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass
class Head:
    dashboard: str  # http://127.0.0.1:<port>, what `ray job submit --address` takes
    temp_dir: Path
    pgid: int
    started: float  # time.time() just before `ray start`
    env: dict[str, str]  # environment for CLI calls: no RAY_ADDRESS, auth off


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # jobs run `python`: the venv's here, the image's there
    return env


def _our_processes(pgid: int, temp_dir: Path, since: float) -> list[psutil.Process]:
    """Processes of the head we started: its process group, anything naming its temp dir, and their children.

    Only processes created after `since` (when we ran `ray start`) count, so a recycled pid is never ours.
    """
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            if proc.info["create_time"] < since:
                continue
            if os.getpgid(proc.pid) == pgid or str(temp_dir) in " ".join(proc.info["cmdline"] or []):
                found[proc.pid] = proc
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    for proc in list(found.values()):
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _stop_head(pgid: int, temp_dir: Path, since: float) -> None:
    """`ray stop` for one cluster: SIGTERM our processes by pid, SIGKILL what is left after a grace period."""
    procs = _our_processes(pgid, temp_dir, since)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    # A short temp dir: Ray's unix socket paths live under it and must stay below ~107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ttpjob-", dir="/tmp"))
    (gcs, dash, client, node_mgr, obj_mgr, agent_http, agent_grpc, metrics, renv_agent) = _free_ports(9)
    env = _cli_env()
    cmd = [
        RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
        "--ray-client-server-port", str(client), "--node-manager-port", str(node_mgr),
        "--object-manager-port", str(obj_mgr), "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
        "--runtime-env-agent-port", str(renv_agent), "--num-cpus", "4", "--num-gpus", "0",
        "--object-store-memory", str(500 * 1024**2), "--temp-dir", str(temp_dir), "--disable-usage-stats",
    ]
    started = time.time() - 1.0
    # A new session: every daemon `ray start` forks shares this process group, which is how we stop only them.
    proc = subprocess.Popen(cmd, env=env, cwd=temp_dir, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    head = Head(f"http://127.0.0.1:{dash}", temp_dir, proc.pid, started, env)
    try:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"ray start failed ({proc.returncode}):\n{out[-4000:]}"
        yield head
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop_head(head.pgid, head.temp_dir, head.started)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _runtime_env(**extra_env: str) -> dict[str, Any]:
    env = yaml.safe_load((REPO / "cluster" / "runtime_env.yaml").read_text())
    env["env_vars"] = {**env["env_vars"], **extra_env}
    return env


def _submit(head: Head, entrypoint: list[str], runtime_env: dict[str, Any], *, working_dir: Path | None = REPO,
            deadline_s: float) -> tuple[str, str]:
    """`ray job submit --no-wait`, then follow the job to a terminal state; returns (status, logs)."""
    from ray.job_submission import JobSubmissionClient  # HTTP only: no ray.init in this process

    sid = f"ttp-test-{uuid.uuid4().hex[:8]}"
    cmd = [RAY, "job", "submit", "--address", head.dashboard, "--submission-id", sid, "--no-wait",
           "--runtime-env-json", json.dumps(runtime_env)]
    if working_dir is not None:
        cmd += ["--working-dir", str(working_dir)]
    sub = subprocess.run([*cmd, "--", *entrypoint], env=head.env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert sub.returncode == 0, f"ray job submit failed:\n{sub.stdout[-3000:]}\n{sub.stderr[-3000:]}"
    client = JobSubmissionClient(head.dashboard)
    end = time.monotonic() + deadline_s  # a hang guard, not a timing assertion
    status = str(client.get_job_status(sid).value)
    while status not in TERMINAL and time.monotonic() < end:
        time.sleep(2)
        status = str(client.get_job_status(sid).value)
    if status not in TERMINAL:
        client.stop_job(sid)
    return status, client.get_job_logs(sid)


def test_uploaded_working_dir_job_imports_ttp_ray(ray_head: Head, tmp_path: Path) -> None:
    out = tmp_path / "hello.json"  # absolute: the job's cwd is the unpacked upload, not this checkout
    status, logs = _submit(ray_head, ["python", HELLO, "--out", str(out)], _runtime_env(TTP_JOB_MARKER="upload"),
                           deadline_s=240)
    assert status == "SUCCEEDED", logs[-4000:]
    result = json.loads(out.read_text())
    snapshots = ray_head.temp_dir.resolve()
    for side in ("driver", "worker"):
        seen = result[side]
        where = Path(seen["ttp_ray_file"]).resolve()
        assert snapshots in where.parents, f"{side} imported ttp_ray from {where}, not the uploaded snapshot"
        assert "working_dir_files" in where.parts
        assert Path(seen["cwd"]).resolve() == where.parent.parent
        assert seen["pythonpath"].split(os.pathsep)[0] == seen["cwd"]
        assert seen["marker"] == "upload" and seen["hf_hub_offline"] == "1"
    assert result["cluster_cpus"] == 4.0  # attached to our head, not to another cluster on the machine


def test_local_working_dir_job_runs_code_in_place(ray_head: Head, tmp_path: Path) -> None:
    """The KubeRay manifests' `working_dir: local:///app`: code already on every node, nothing uploaded."""
    out = tmp_path / "hello.json"
    env = _runtime_env(TTP_JOB_MARKER="local")
    env["working_dir"] = f"local://{REPO}"
    status, logs = _submit(ray_head, ["python", HELLO, "--out", str(out)], env, working_dir=None, deadline_s=240)
    assert status == "SUCCEEDED", logs[-4000:]
    result = json.loads(out.read_text())
    for side in ("driver", "worker"):
        assert Path(result[side]["ttp_ray_file"]).resolve() == REPO / "ttp_ray" / "__init__.py"
        assert Path(result[side]["cwd"]).resolve() == REPO
        assert result[side]["marker"] == "local"


@pytest.mark.skipif(not PIPELINE.is_file(), reason="jobs/pipeline.py not present")
@pytest.mark.skipif(not TINY.is_file(), reason="tests/fixtures/configs/tiny.yaml not present")
def test_pipeline_job_writes_report_candidates_and_scores(ray_head: Head, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    run_dir = tmp_path / "run"
    entry = ["python", "jobs/pipeline.py", "--config", str(TINY.relative_to(REPO)), "--set", f"run_dir={run_dir}"]
    status, logs = _submit(ray_head, entry, _runtime_env(), deadline_s=900)
    assert status == "SUCCEEDED", logs[-6000:]

    report = run_dir / "report.json"
    assert report.is_file(), f"no report.json under {run_dir}: {sorted(p.name for p in run_dir.iterdir())}"
    assert json.loads(report.read_text()), "report.json is empty"
    candidates = sorted((run_dir / "candidates").rglob("*.parquet"))
    candidates = [p for p in candidates if p.name != "errors.parquet"]
    assert candidates, "no candidate Parquet files"
    assert sum(pq.read_metadata(p).num_rows for p in candidates) > 0
    scores = sorted((run_dir / "scores").rglob("scores.parquet"))
    assert scores and all(pq.read_metadata(p).num_rows > 0 for p in scores)
