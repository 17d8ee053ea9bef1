"""Engine interface and the hf engine (real SmolLM2-135M on CPU, a few tokens)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ttp_ray.policy.config import EngineConfig, SamplingConfig
from ttp_ray.policy.engines import EngineError, Generation, build_engine, check_generations, query_seed

PROMPTS = ["Change: Files: a.py\nDescription: fix typo\nSubject: fix typo in a.py\n\nChange: Files: b.py\n"
           "Description: add tests for b\nSubject:", "The capital of France is"]


def test_check_generations_rejects_a_wrong_n() -> None:
    g = Generation("x", 1, None)
    assert check_generations([[g, g]], 1, 2) == [[g, g]]
    with pytest.raises(EngineError, match="1 candidates for prompt #0, asked for n=2"):
        check_generations([[g]], 1, 2)
    with pytest.raises(EngineError, match="2 outputs for 1 prompts"):
        check_generations([[g], [g]], 1, 1)


def test_query_seed_is_stable_and_distinct() -> None:
    assert query_seed(0, "q1") == query_seed(0, "q1")
    assert len({query_seed(0, f"q{i}") for i in range(1000)}) == 1000
    assert query_seed(1, "q1") != query_seed(0, "q1")
    assert 0 <= query_seed(7, "x") < 2**63


def test_engine_modules_import_without_torch_or_vllm() -> None:
    code = ("import sys, ttp_ray.policy, ttp_ray.policy.engines.hf_engine, ttp_ray.policy.engines.vllm_engine, "
            "ttp_ray.generation.stages; print(sorted(m for m in ('torch', 'vllm', 'bm25s', 'numba', 'ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def hf_engine():
    return build_engine(EngineConfig(backend="hf", max_model_len=512, num_threads=1,
                                     sampling=SamplingConfig(max_tokens=6)))


def test_hf_engine_returns_n_per_prompt_in_order(hf_engine) -> None:
    out = hf_engine.generate(PROMPTS, 3, seeds=[1, 2])
    assert [len(o) for o in out] == [3, 3]
    for cands in out:
        for g in cands:
            assert "\n" not in g.text  # the stop string ends the text and is excluded
            assert 1 <= g.num_tokens <= 6
            assert g.logprob is not None and g.logprob < 0
    assert any("Paris" in g.text for g in out[1]) or all(g.text for g in out[1])


def test_hf_engine_is_reproducible_per_query_seed(hf_engine) -> None:
    a = hf_engine.generate(PROMPTS, 2, seeds=[11, 12])
    b = hf_engine.generate(PROMPTS[::-1], 2, seeds=[12, 11])  # other batch order: same samples per query
    assert a[0] == b[1] and a[1] == b[0]
    others = hf_engine.generate(PROMPTS[:1] * 2, 2, seeds=[13, 14])
    assert any(o != a[0] for o in others)  # other seeds, other samples


def test_hf_prefill_once_matches_plain_generate(hf_engine) -> None:
    """The shared-prefix KV cache expanded to n rows decodes exactly like `generate` on the full prompt."""
    import torch

    cold = EngineConfig(backend="hf", max_model_len=512, num_threads=1,
                        sampling=SamplingConfig(temperature=1e-4, max_tokens=6))
    hf_engine.cfg, saved = cold, hf_engine.cfg
    try:
        ours = hf_engine.generate(PROMPTS, 2, seeds=[0, 0])
    finally:
        hf_engine.cfg = saved
    tok, model = hf_engine.tokenizer, hf_engine.model
    for prompt, cands in zip(PROMPTS, ours, strict=True):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            greedy = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                                    stop_strings=["\n"], tokenizer=tok, pad_token_id=tok.pad_token_id)
        text = tok.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0]
        assert [g.text for g in cands] == [text, text]


def test_hf_engine_rejects_prompts_over_the_context(hf_engine) -> None:
    with pytest.raises(ValueError, match="exceeds max_model_len=512"):
        hf_engine.generate(["word " * 600], 1)
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        hf_engine.generate(PROMPTS, 0)
