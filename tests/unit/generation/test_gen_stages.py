"""The two pipeline stages called in-process (no Ray): prompts, N rows per query, ROUGE, error isolation."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ttp_ray.generation import plan, store
from ttp_ray.generation.stages import PROMPTED, SUMMARY, CandidateStage, PromptStage, candidates_table
from ttp_ray.policy.config import EngineConfig, PolicyConfig, SamplingConfig
from ttp_ray.policy.engines import Generation


def test_candidates_table_has_n_rows_per_query_and_golden_rouge() -> None:
    rows = [{"user_id": "u", "query_id": "a", "query_text": "qa", "reference": "fix the flaky test"},
            {"user_id": "u", "query_id": "b", "query_text": "qb", "reference": None}]
    gens = [[Generation(" fix the flaky test\n", 5, -2.0), Generation("unrelated", 1, None)],
            [Generation("x", 1, -0.1), Generation("y", 1, -0.2)]]
    t = candidates_table(rows, gens, "eval")
    assert t.num_rows == 4
    assert t["cand_idx"].to_pylist() == [0, 1, 0, 1]
    assert t["text"].to_pylist()[0] == "fix the flaky test"  # stripped
    assert t["rouge1"].to_pylist()[:2] == [1.0, 0.0] and t["rougeL"].to_pylist()[0] == 1.0
    assert t["rouge1"].to_pylist()[2:] == [None, None]  # unknown reference -> null scores
    assert t["logprob"].to_pylist()[1] is None


@pytest.fixture
def pending(commit_run_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "pending.parquet"
    plan.write_pending("eval", commit_run_dir / "data/commits", set(), path, row_group_size=4)
    return path


def test_prompt_stage_builds_prompts_and_reports_oversized_queries(commit_run_dir: Path, pending: Path) -> None:
    profile = str(commit_run_dir / "data/commits/profile.parquet")
    for in_memory_mb in (1024, 0):  # whole profile, or read per batch with a user filter: same prompts
        stage = PromptStage(str(pending), profile, PolicyConfig(max_prompt_tokens=200).model_dump(),
                            "smollm2-135m-instruct", in_memory_mb)
        out = stage(pa.table({"row_group": [0, 2]}))
        assert out.schema.equals(PROMPTED) and out.num_rows == 5
        ok = out.filter(pc.is_null(out["error"]))
        assert ok.num_rows >= 1
        assert all(p.endswith("\nSubject:") for p in ok["prompt"].to_pylist())
        assert max(ok["n_prompt_tokens"].to_pylist()) <= 200
        if in_memory_mb:
            first = out
        else:
            assert out["prompt"].to_pylist() == first["prompt"].to_pylist()
    tiny = PromptStage(str(pending), profile, PolicyConfig(max_prompt_tokens=10).model_dump(),
                       "smollm2-135m-instruct", 1024)
    bad = tiny(pa.table({"row_group": [0]}))
    assert bad["error"].null_count == 0 and set(bad["error_field"].to_pylist()) == {"query_text"}


def test_candidate_stage_commits_good_queries_and_isolates_bad_ones(commit_run_dir: Path, pending: Path,
                                                                    tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    epoch = store.begin_run(out_dir, {"n": 2})
    profile = str(commit_run_dir / "data/commits/profile.parquet")
    prompts = PromptStage(str(pending), profile, PolicyConfig(max_prompt_tokens=200).model_dump(),
                          "smollm2-135m-instruct", 1024)(pa.table({"row_group": [0]}))
    # row 0: a prompt the engine rejects (too long for its context); row 1: refused by the prompt stage
    long_prompt = "word " * 400
    prompts = prompts.set_column(PROMPTED.get_field_index("prompt"), "prompt",
                                 pa.array([long_prompt, None, *prompts["prompt"].to_pylist()[2:]]))
    errs = prompts["error"].to_pylist()
    errs[1] = "too long"
    prompts = prompts.set_column(PROMPTED.get_field_index("error"), "error", pa.array(errs, pa.string()))
    engine = EngineConfig(backend="hf", max_model_len=256, num_threads=1, sampling=SamplingConfig(max_tokens=4))
    stage = CandidateStage(engine.model_dump(), 2, "eval", str(out_dir), epoch)
    summary = stage(prompts)
    assert summary.schema.equals(SUMMARY) and summary.num_rows == 4
    n_cands = summary["n_candidates"].to_pylist()
    assert n_cands == [0, 0, 2, 2]
    assert "exceeds max_model_len=256" in summary["error"][0].as_py()
    assert summary["error"][1].as_py() == "too long"
    stored = store.read_candidates(out_dir)
    assert stored.num_rows == 4
    assert set(stored["query_id"].to_pylist()) == set(prompts["query_id"].to_pylist()[2:])
    rouge = stored["rouge1"].to_pylist()
    assert all(r is not None and 0.0 <= r <= 1.0 for r in rouge)
