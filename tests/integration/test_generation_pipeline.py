"""The Ray Data generation pipeline with the hf engine: pools, exactly-once, resume after killing the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ttp_ray.data.schema import CANDIDATES
from ttp_ray.generation import GenerationConfig, candidates_dir, read_candidates, run_generation
from ttp_ray.generation.store import part_paths

REPO = Path(__file__).resolve().parents[2]


def write_commit_dataset(run_dir: Path, data_dir: Path, users: int) -> None:
    from ttp_ray.data.lamp import load_lamp

    ds = load_lamp(data_dir / "questions.json", data_dir / "outputs.json", name="commits", max_users=users,
                   max_profile_items=30)
    ds.write(run_dir / "data" / "commits")


def hf_config(**over) -> GenerationConfig:
    base = {"engine": {"backend": "hf", "max_model_len": 512, "sampling": {"max_tokens": 6}},
            "policy": {"max_prompt_tokens": 192}, "n_candidates": 3, "actors": {"batch_size": 3}}
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return GenerationConfig.model_validate(base)


def assert_exact_pools(table, n: int, n_queries: int, mode: str, max_tokens: int) -> None:
    assert table.schema.equals(CANDIDATES)
    assert table.num_rows == n * n_queries
    keys = table.group_by(["user_id", "query_id"]).aggregate([("cand_idx", "count_distinct"), ("cand_idx", "max")])
    assert keys.num_rows == n_queries
    assert set(keys["cand_idx_count_distinct"].to_pylist()) == {n}
    assert set(keys["cand_idx_max"].to_pylist()) == {n - 1}
    assert set(table["mode"].to_pylist()) == {mode}
    for col in ("rouge1", "rougeL"):
        assert table[col].null_count == 0
        assert 0.0 <= pc.min(table[col]).as_py() <= pc.max(table[col]).as_py() <= 1.0
    assert 1 <= pc.min(table["num_tokens"]).as_py() <= pc.max(table["num_tokens"]).as_py() <= max_tokens


@pytest.mark.slow
def test_hf_pipeline_eval_rm_train_and_rerun(ray_session, tmp_path: Path, commit_data_dir: Path) -> None:
    write_commit_dataset(tmp_path, commit_data_dir, users=3)
    cfg = hf_config()
    summary = run_generation(tmp_path, "commits", cfg, "eval", progress=False)
    assert (summary["planned"], summary["generated_queries"], summary["errors"]) == (9, 9, 0)
    assert summary["generated_candidates"] == 27 and summary["tokens"] > 0
    out = candidates_dir(tmp_path, "commits", "eval")
    pools = read_candidates(out)
    assert_exact_pools(pools, 3, 9, "eval", 6)
    queries = pq.read_table(tmp_path / "data/commits/queries.parquet")
    assert set(pools["query_id"].to_pylist()) == set(queries["query_id"].to_pylist())
    assert pq.read_table(out / "errors.parquet").num_rows == 0

    before = {p.name: p.stat().st_mtime_ns for p in part_paths(out)}
    again = run_generation(tmp_path, "commits", cfg, "eval", progress=False)
    assert (again["skipped"], again["generated_queries"]) == (9, 0)
    assert {p.name: p.stat().st_mtime_ns for p in part_paths(out)} == before  # nothing rewritten

    cfg_rm = hf_config(n_candidates=3, rm_train={"items_per_user": 2, "candidates_per_item": 2})
    rm = run_generation(tmp_path, "commits", cfg_rm, "rm_train", progress=False)
    assert (rm["planned"], rm["generated_queries"]) == (6, 6)
    rm_pools = read_candidates(candidates_dir(tmp_path, "commits", "rm_train"))
    assert_exact_pools(rm_pools, 2, 6, "rm_train", 6)
    profile = pq.read_table(tmp_path / "data/commits/profile.parquet")
    assert set(rm_pools["query_id"].to_pylist()) <= set(profile["item_id"].to_pylist())


@pytest.mark.slow
def test_resume_after_killing_the_job_is_complete_and_duplicate_free(ray_session, tmp_path: Path,
                                                                     commit_data_dir: Path) -> None:
    """Kill the job (driver + its actors) after its first committed part; the rerun finishes exactly."""
    import ray

    write_commit_dataset(tmp_path, commit_data_dir, users=3)
    cfg_path = tmp_path / "gen.yaml"
    cfg_path.write_text("generation:\n  n_candidates: 4\n  engine: {backend: hf, max_model_len: 512, sampling: "
                        "{max_tokens: 8}}\n  policy: {max_prompt_tokens: 192}\n  actors: {batch_size: 1}\n")
    out = candidates_dir(tmp_path, "commits", "eval")
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}
    log = (tmp_path / "job.log").open("w")
    job = subprocess.Popen(
        [sys.executable, str(REPO / "jobs/generate_candidates.py"), "--config", str(cfg_path), "--run-dir",
         str(tmp_path), "--dataset", "commits", "--mode", "eval", "--no-progress"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not part_paths(out):
            assert job.poll() is None, f"job ended early: {(tmp_path / 'job.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no part committed in time"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    done_before = len({q for p in part_paths(out) for q in pq.read_table(p, columns=["query_id"])["query_id"]
                       .to_pylist()})
    assert 0 < done_before < 9, "the kill must land mid-run"

    cfg = GenerationConfig.model_validate({
        "n_candidates": 4, "engine": {"backend": "hf", "max_model_len": 512, "sampling": {"max_tokens": 8}},
        "policy": {"max_prompt_tokens": 192}, "actors": {"batch_size": 1}})
    summary = run_generation(tmp_path, "commits", cfg, "eval", progress=False)
    assert summary["skipped"] >= done_before  # a zombie actor may have finished one more batch before the fence
    assert summary["skipped"] + summary["generated_queries"] == 9 and summary["errors"] == 0
    assert_exact_pools(read_candidates(out), 4, 9, "eval", 8)
