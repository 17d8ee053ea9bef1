"""The OpenAI best-of-N semantics without Ray: request models, ranking, the SSE chunk format, per-call sampling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ttp_ray.serving import openai_api
from ttp_ray.serving.config import BoundsConfig
from ttp_ray.serving.deployments import ScoreReply
from ttp_ray.serving.policy_runtime import (
    GenerateCall,
    GeneratedCandidate,
    GenerateReply,
    PolicyRuntime,
    SamplingOverride,
)
from ttp_ray.serving.schemas import build_request_models

MODELS = build_request_models(BoundsConfig(max_n=4), default_n=3, max_tokens=8)
MSG = [{"role": "user", "content": "q"}]


def _chat(**kw: Any) -> Any:
    return MODELS.chat.model_validate({"model": "m", "messages": MSG, **kw})


def test_best_of_and_n_semantics() -> None:
    assert _chat().candidates_to_sample() == 3 and _chat().n == 1
    assert _chat(n=4).candidates_to_sample() == 4  # best_of defaults to max(default_n, n)
    assert _chat(n=2, best_of=2).candidates_to_sample() == 2
    with pytest.raises(ValidationError, match="best_of"):
        _chat(n=3, best_of=2)
    with pytest.raises(ValidationError, match="best_of"):
        _chat(best_of=5)  # above bounds.max_n


@pytest.mark.parametrize("field,value", [("logit_bias", {}), ("presence_penalty", 0.1), ("tools", []),
                                         ("response_format", {"type": "text"}), ("logprobs", True)])
def test_unhonoured_parameters_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        _chat(**{field: value})


def test_sampling_parameters_and_user() -> None:
    r = _chat(max_tokens=5, temperature=0.3, top_p=0.5, stop="\n", seed=3, safety_identifier="bob")
    assert openai_api.sampling_of(r) == SamplingOverride(0.3, 0.5, 5, ("\n",), 3)
    assert r.user_id() == "bob" and _chat(user="al").user_id() == "al"
    assert _chat(max_completion_tokens=2).token_limit() == 2
    with pytest.raises(ValidationError, match="max_tokens"):
        _chat(max_tokens=9)  # above the deployment's limit (a smaller one is honoured)
    with pytest.raises(ValidationError, match="different users"):
        _chat(user="a", safety_identifier="b")
    with pytest.raises(ValidationError, match="stop"):
        _chat(stop=["a", "b", "c", "d", "e"])
    c = MODELS.completion.model_validate({"model": "m", "prompt": ["only one"], "max_tokens": 1})
    assert c.query() == "only one" and c.token_limit() == 1
    with pytest.raises(ValidationError, match="echo"):
        MODELS.completion.model_validate({"model": "m", "prompt": "q", "echo": True})


GEN = GenerateReply(
    candidates=[GeneratedCandidate("fix lint rule", 3, False, -6.0), GeneratedCandidate("fix lint", 2, True, -1.0),
                GeneratedCandidate("docs readme", 2, False, -8.0)],
    prompt_tokens=10, personalized=True)
SCORES = ScoreReply(mu=[0.1, 0.5, 0.3], sigma=[0.2, 0.2, 0.2], fallback=False, method="user-prob", rm_version="v")


def test_rank_by_each_method() -> None:
    assert openai_api.rank("rm", GEN, SCORES) == [1, 2, 0]
    assert openai_api.rank("logprob", GEN, SCORES) == [1, 0, 2]  # per token: -0.5, -2, -4
    assert openai_api.rank("mbr", GEN, SCORES)[-1] == 2  # the odd one out has the least consensus


def test_extension_usage_and_sse_chunks() -> None:
    req = _chat(n=2, best_of=3, user="al", ttp_candidates=True)
    order = openai_api.rank("rm", GEN, SCORES)
    ext = openai_api.extension(req, GEN, SCORES, order)
    assert [c.index for c in ext.choices] == [1, 2] and ext.chosen_text == "fix lint" and len(ext.candidates) == 3
    assert openai_api.usage(GEN).completion_tokens == 7
    lines = list(openai_api.sse_chunks(True, "m", GEN, order, 2, ext))
    assert lines[-1] == "data: [DONE]\n\n" and all(x.startswith("data: ") and x.endswith("\n\n") for x in lines)
    bodies = [json.loads(x[6:]) for x in lines[:-1]]
    text = {0: "", 1: ""}
    for b in bodies:
        assert b["object"] == "chat.completion.chunk"
        for ch in b["choices"]:
            text[ch["index"]] += ch["delta"].get("content") or ""
    assert text == {0: "fix lint", 1: "docs readme"}
    finishes = [ch["finish_reason"] for b in bodies for ch in b["choices"] if ch["finish_reason"]]
    assert finishes == ["length", "stop"]
    assert bodies[-1]["usage"]["completion_tokens"] == 7 and bodies[-1]["ttp"]["best_of"] == 3


class _FakeEngine:
    """A stand-in for the hf engine's interface (not vLLM): records the sampling it was called with."""

    def __init__(self) -> None:
        from ttp_ray.policy.config import EngineConfig

        self.cfg = EngineConfig(backend="hf")
        self.calls: list[tuple[int, Any, Any]] = []

    def generate(self, prompts: list[str], n: int, *, seeds: Any = None) -> list[list[Any]]:
        from ttp_ray.policy.engines.base import Generation

        s = self.cfg.sampling
        self.calls.append((n, (s.temperature, s.max_tokens, tuple(s.stop)), seeds))
        return [[Generation(f"{p}-{k}", s.max_tokens, -1.0) for k in range(n)] for p in prompts]


class _Prompt:
    def __init__(self, text: str) -> None:
        self.text, self.n_tokens = text, len(text)


class _Rag:
    def build(self, user: str, task: str, query: str) -> _Prompt:
        return _Prompt(query)

    def has_user(self, user: str) -> bool:
        return user == "al"


def test_per_call_sampling_groups_and_restores_the_engine_config() -> None:
    engine = _FakeEngine()
    rt = PolicyRuntime(engine, _Rag(), "commit_subject", max_tokens=engine.cfg.sampling.max_tokens)
    fast = SamplingOverride(temperature=0.2, max_tokens=3, stop=("x",), seed=5)
    out = rt.generate([GenerateCall("al", "a", 2), GenerateCall(None, "b", 2, fast), GenerateCall(None, "c", 2)])
    assert [len(o.candidates) for o in out] == [2, 2, 2]
    assert out[1].candidates[0].num_tokens == 3 and out[1].candidates[0].truncated  # reached its own max_tokens
    assert out[0].personalized and not out[1].personalized and out[0].candidates[0].logprob == -1.0
    assert sorted(engine.calls, key=str) == sorted([(2, (0.7, 32, ("\n",)), None), (2, (0.2, 3, ("x",)), [5])],
                                                   key=str)
    assert engine.cfg.sampling.temperature == 0.7  # the deployment's sampling is back after the call
