"""GenerationConfig: defaults, cross-field checks, YAML section loading, the resume fingerprint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ttp_ray.errors import TTPValidationError
from ttp_ray.generation import GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "jobs"))
from generate_candidates import load_generation_config  # noqa: E402


def test_defaults_follow_the_paper_and_the_measurements() -> None:
    cfg = GenerationConfig()
    assert cfg.n_candidates == 30 and cfg.n_for("rm_train") == cfg.rm_train.candidates_per_item
    assert cfg.engine.backend == "vllm" and cfg.engine.model == "smollm2-135m-instruct"
    assert cfg.policy.retrieval.k == 4 and cfg.policy.template == "auto"


def test_prompt_budget_must_fit_the_context() -> None:
    with pytest.raises(ValueError, match="max_prompt_tokens.*must be <= `engine.max_model_len`"):
        GenerationConfig.model_validate({"engine": {"max_model_len": 512}, "policy": {"max_prompt_tokens": 500}})


def test_tensor_parallel_needs_gpus() -> None:
    with pytest.raises(ValueError, match="needs `actors.num_gpus` >= 2"):
        GenerationConfig.model_validate({"engine": {"tensor_parallel_size": 2}})
    GenerationConfig.model_validate({"engine": {"tensor_parallel_size": 2}, "actors": {"num_gpus": 2}})


def test_yaml_section_overrides_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("generation:\n  n_candidates: 8\n  engine: {backend: hf}\nother_stage: {x: 1}\n")
    cfg = load_generation_config(str(path), ["engine.sampling.temperature=0.9", "generation.actors.pool_size=2"])
    assert (cfg.n_candidates, cfg.engine.backend, cfg.engine.sampling.temperature, cfg.actors.pool_size) == \
        (8, "hf", 0.9, 2)
    with pytest.raises(TTPValidationError, match="unknown keys"):
        load_generation_config(str(path), ["engine.beam_width=3"])


def test_fingerprint_ignores_placement_but_not_sampling() -> None:
    a = GenerationConfig()
    b = GenerationConfig.model_validate({"actors": {"pool_size": 4, "batch_size": 32}})
    c = GenerationConfig.model_validate({"engine": {"sampling": {"temperature": 1.0}}})
    assert a.fingerprint("eval") == b.fingerprint("eval")
    assert a.fingerprint("eval") != c.fingerprint("eval")
    assert a.fingerprint("eval") != a.fingerprint("rm_train")
