"""The real vLLM engine (CPU build) in a Ray Data actor pool: one engine start, tiny generations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ttp_ray.data.schema import CANDIDATES
from ttp_ray.generation import GenerationConfig, candidates_dir, read_candidates, run_generation

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]


def test_vllm_pipeline_returns_all_n_candidates(ray_session, tmp_path: Path, commit_data_dir: Path) -> None:
    from ttp_ray.data.lamp import load_lamp

    load_lamp(commit_data_dir / "questions.json", commit_data_dir / "outputs.json", name="commits", max_users=2,
              max_profile_items=30).write(tmp_path / "data" / "commits")
    cfg = GenerationConfig.model_validate({
        "n_candidates": 4,
        # eager: no torch.compile warm-up (~2.5 min saved on the CPU build); a few tokens are all we need
        "engine": {"backend": "vllm", "max_model_len": 512, "enforce_eager": True, "sampling": {"max_tokens": 5}},
        "policy": {"max_prompt_tokens": 256},
        "actors": {"batch_size": 6},  # all 6 queries in one engine call
    })
    summary = run_generation(tmp_path, "commits", cfg, "eval", progress=False)
    assert (summary["planned"], summary["generated_queries"], summary["errors"]) == (6, 6, 0)

    pools = read_candidates(candidates_dir(tmp_path, "commits", "eval"))
    assert pools.schema.equals(CANDIDATES)
    assert pools.num_rows == 6 * 4  # vLLM's n outputs are all kept (ray.data.llm would keep 1 of 4)
    keys = pools.group_by(["user_id", "query_id"]).aggregate([("cand_idx", "count_distinct")])
    assert keys.num_rows == 6 and set(keys["cand_idx_count_distinct"].to_pylist()) == {4}
    queries = pq.read_table(tmp_path / "data/commits/queries.parquet")
    assert set(pools["query_id"].to_pylist()) == set(queries["query_id"].to_pylist())
    assert 0.0 <= pc.min(pools["rouge1"]).as_py() <= pc.max(pools["rouge1"]).as_py() <= 1.0
    assert pools["rougeL"].null_count == 0
    assert 1 <= pc.min(pools["num_tokens"]).as_py() <= pc.max(pools["num_tokens"]).as_py() <= 5
    assert pools["logprob"].null_count == 0 and pc.max(pools["logprob"]).as_py() <= 0.0
    assert len(set(pools["text"].to_pylist())) > 1  # sampled, not one repeated output
