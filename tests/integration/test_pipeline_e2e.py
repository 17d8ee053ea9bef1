"""The demo pipeline end to end on a tiny config: data → generate (hf engine + simulated) → train (Ray Train +
DeepSpeed, all four variants) → score → evaluate → combined report; then a rerun skips every finished stage, and
`ttp serve --run-dir` turns the run into an endpoint that answers the `openai` client with the token it printed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ttp_ray.pipeline import run_pipeline
from ttp_ray.pipeline_config import load_pipeline_config

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "configs" / "tiny.yaml"
METHODS = {"oracle", "random", "global-det", "global-prob", "user-det", "user-prob"}


@pytest.mark.slow
def test_tiny_pipeline_report_fields_and_ranges(ray_session, tmp_path: Path, monkeypatch) -> None:
    # a relative run_dir, as `make demo` uses (runs/demo): Ray Train and Tune need absolute storage paths
    monkeypatch.chdir(tmp_path.parent)
    cfg = load_pipeline_config(TINY, [f"run_dir={tmp_path.name}"])
    report = run_pipeline(cfg)

    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert set(on_disk["datasets"]) == {"tiny-policy", "tiny-sim"}
    # the claims check is stated for every dataset (whether each holds is up to the data: tiny is noisy)
    assert set(on_disk["claims"]) == {"tiny-policy", "tiny-sim"}
    for claims in on_disk["claims"].values():
        # 6 claims + "User-Prob beats the best training-free selector" (MBR needs only the candidates' texts)
        assert len(claims) == 7 and all(c["passed"] in (True, False, None) and c["detail"] for c in claims)
    assert "## The method's claims on this run" in (tmp_path / "report.md").read_text()
    for name, rep in report["datasets"].items():
        # the training-free selectors sit beside the RMs: MBR and MBR against the user's profile always,
        # log-prob where the engine gave log-probs
        free = set(rep["methods"]) - METHODS
        assert set(rep["methods"]) >= METHODS and {"mbr", "profile-mbr"} <= free, name
        assert free <= {"mbr", "profile-mbr", "logprob", "logprob-mean"}, name
        if name == "tiny-sim":  # the simulated policy gives no log-probs
            assert free == {"mbr", "profile-mbr"}
        assert all(rep["methods"][m]["kind"] == "training-free" for m in free)
        g = rep["golden"]
        ns = rep["ns"]
        assert ns == [1, 2, 4]
        oracle, rand = rep["methods"]["oracle"]["bon"][g], rep["methods"]["random"]["bon"][g]
        # exact BoN: all curves start at the pool mean; the oracle is non-decreasing and bounds every RM
        for m, e in rep["methods"].items():
            curve = e["bon"][g]
            assert len(curve) == len(ns) and all(0.0 <= v <= 1.0 for v in curve), (name, m)
            mc = "se" in e  # MBR and pool-aware RMs: Monte Carlo over subsets
            if mc:  # N=1 is a random pick, within its standard error
                assert abs(curve[0] - rand[0]) <= 4 * e["se"][g][0] + 1e-9, (name, m)
            else:
                assert math.isclose(curve[0], rand[0], abs_tol=1e-9), (name, m)
            # a Monte Carlo estimate may sit above the exact oracle by its noise (at N=1 both are the mean)
            tol = [4 * x for x in e["se"][g]] if mc else [0.0] * len(ns)
            assert all(v <= o + t + 1e-9 for v, o, t in zip(curve, oracle, tol, strict=True)), (name, m)
        assert all(b >= a - 1e-12 for a, b in zip(oracle, oracle[1:], strict=False))
        for m in METHODS - {"oracle", "random"}:
            d = rep["methods"][m]["diagnostics"]
            assert 0.0 <= d["alpha"] <= 1.0 and 0.0 <= d["beta"] <= 1.0
        # the eval pools are complete: every (query, cand_idx) candidate has a golden score
    for ds in ("tiny-policy", "tiny-sim"):
        for mode in ("eval", "rm_train"):
            assert any((tmp_path / "candidates" / ds / mode).glob("part-*.parquet")), (ds, mode)
        assert (tmp_path / "scores" / ds / "scores.parquet").is_file()
        for png in ("bon_curves.png",):
            assert any((tmp_path / "eval" / ds).glob("*.png")), png
    # the simulated dataset has a real selection signal: the oracle gains, and a trained RM beats random at N=4
    sim = report["datasets"]["tiny-sim"]
    g = sim["golden"]
    assert sim["methods"]["oracle"]["bon"][g][-1] > sim["methods"]["random"]["bon"][g][-1] + 0.05
    assert max(sim["methods"][m]["bon"][g][-1] for m in METHODS - {"oracle", "random"}) > \
        sim["methods"]["random"]["bon"][g][-1]

    # resumable: a second run finds every stage done and reproduces the same report
    again = run_pipeline(load_pipeline_config(TINY, [f"run_dir={tmp_path.name}"]))
    assert again["summary"] == report["summary"]

    # from the run to an endpoint in one command, used as the printed lines say (same run dir, no second pipeline)
    _serve_run_and_chat(tmp_path, "tiny-policy")


# ------------------------------------------------------------------------------- ttp serve --run-dir
SERVE_START_S = 300  # Ray start + MiniLM RM + SmolLM2 (hf) policy on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_run_and_chat(run_dir: Path, dataset: str) -> None:
    """`ttp serve --run-dir <run> --dataset <dataset>` in its own process group (its own local Ray cluster, as a
    user's shell would start it); the token comes from its stdout; one chat completion through `openai`."""
    import httpx
    import openai
    import pyarrow.parquet as pq

    port = _free_port()
    ttp = Path(sys.executable).with_name("ttp")
    cmd = [str(ttp)] if ttp.is_file() else [sys.executable, "-m", "ttp_ray.cli"]
    cmd += ["serve", "--run-dir", run_dir.name, "--dataset", dataset, "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "TTP_API_TOKEN")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    log_path = run_dir.parent / f"serve-{run_dir.name}.log"  # a file, not a pipe: Ray's logs never block it
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=run_dir.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVE_START_S
        token = None
        while token is None:
            m = re.search(r"^export TTP_API_TOKEN=(\S+)$", log_path.read_text(errors="replace"), re.M)
            token = m.group(1) if m else None
            assert proc.poll() is None or token, f"ttp serve exited {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no token after {SERVE_START_S} s:\n{log_path.read_text()[-4000:]}"
            if token is None:
                time.sleep(2)
        base = f"http://127.0.0.1:{port}"
        while True:  # printed once the app runs, so this answers at once; bounded all the same
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=10).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"/healthz never answered 200:\n{log_path.read_text()[-4000:]}"
            time.sleep(2)

        out = log_path.read_text(errors="replace")
        assert out.count(token) == 1, "the token is printed exactly once"
        users = pq.read_table(run_dir / "data" / dataset / "users.parquet").column("user_id").to_pylist()
        queries = pq.read_table(run_dir / "data" / dataset / "queries.parquet").to_pylist()
        user = users[0]
        query = next(q["query_text"] for q in queries if q["user_id"] == user)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=180)
        resp = client.chat.completions.create(model="ttp-best-of-n", messages=[{"role": "user", "content": query}],
                                              user=user, extra_body={"ttp_candidates": True})
        assert len(resp.choices) == 1 and resp.choices[0].message.role == "assistant"
        choice = resp.choices[0].message.content
        ext = resp.model_extra["ttp"]
        assert isinstance(choice, str) and choice == ext["chosen_text"] and resp.usage.completion_tokens > 0
        assert ext["user_id"] == user and ext["fallback"] is False and ext["rm_method"] == "user-prob"
        assert len(ext["candidates"]) == 4  # the run's generation.n_candidates (listed on request only)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="not-" + token, max_retries=0).models.list()
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Ctrl-C to the command's process group (it shuts its Ray cluster down), then SIGKILL what is left of it."""
    try:
        ours = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        ours = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(ours, timeout=10)
    for p in alive:  # a Ray daemon that left the group
        with contextlib.suppress(psutil.Error):
            p.kill()
