"""The policy side of a generate request, without Ray: RAG prompt from the stored profile -> engine -> candidates.

The Serve `Policy` deployment wraps one `PolicyRuntime`; keeping it Ray-free lets benchmarks and tests run the
same code in-process. One bad request (a query too long for the prompt budget) never fails the others batched
with it: errors are returned per call.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ttp_ray.serving.config import PolicySection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingOverride:
    """A request's own sampling parameters; None keeps the deployment's `engine.sampling` value."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None  # <= the deployment's (the request model bounds it)
    stop: tuple[str, ...] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class GenerateCall:
    user_id: str | None  # None: no personal context (the prompt shows no profile items)
    query: str
    n: int
    sampling: SamplingOverride = SamplingOverride()


@dataclass(frozen=True)
class GeneratedCandidate:
    text: str
    num_tokens: int
    truncated: bool  # reached the call's max_tokens
    logprob: float | None = None  # summed token log-prob under the policy, when the engine reports it


@dataclass(frozen=True)
class GenerateReply:
    candidates: list[GeneratedCandidate]
    prompt_tokens: int
    personalized: bool  # the prompt was built from the user's stored profile


class PolicyRuntime:
    """An engine plus a `RagPolicy` over the PROFILE table of the served users."""

    def __init__(self, engine: Any, rag: Any, task: str, max_tokens: int) -> None:
        self.engine = engine
        self.rag = rag
        self.task = task
        self.max_tokens = max_tokens

    @classmethod
    def from_section(cls, section: PolicySection) -> PolicyRuntime:
        import pyarrow.parquet as pq

        from ttp_ray.data.schema import PROFILE, conform
        from ttp_ray.policy import RagPolicy, build_engine, load_tokenizer

        profile = conform(pq.read_table(section.profile_path), PROFILE)
        rag = RagPolicy(profile, section.rag, load_tokenizer(section.engine.model))
        engine = build_engine(section.engine)
        log.info("policy: %d users' profiles (%d items) from %s", len(rag.users), profile.num_rows,
                 section.profile_path)
        return cls(engine, rag, section.task, section.engine.sampling.max_tokens)

    def has_profile(self, user_id: str | None) -> bool:
        return user_id is not None and self.rag.has_user(user_id)

    def generate(self, calls: list[GenerateCall]) -> list[GenerateReply | Exception]:
        """Engine calls for the whole list; each call gets its reply or its own exception.

        vLLM: one `LLM.generate` over every call, each with its own `SamplingParams` (n, temperature, ...), so
        requests with different parameters still share the batch. Other engines: one call per distinct
        (n, sampling) group, with the group's sampling swapped into the engine's config.
        """
        out: list[GenerateReply | Exception | None] = [None] * len(calls)
        groups: dict[Any, list[tuple[int, Any]]] = defaultdict(list)
        for i, call in enumerate(calls):
            try:
                prompt = self.rag.build("" if call.user_id is None else call.user_id, self.task, call.query)
            except Exception as e:  # PromptTooLongError is a TTPValidationError -> 422 at the ingress
                out[i] = e
                continue
            # vLLM batches mixed parameters, except seeded requests: per-request seeds crashed the CPU engine in
            # mixed batches (docs/measured), so a seeded call runs in an engine call of its own.
            key = ("vllm", i if call.sampling.seed is not None else -1) if self._is_vllm() else (call.n, call.sampling)
            groups[key].append((i, prompt))
        for members in groups.values():
            self._generate_group(calls, members, out)
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]

    def _is_vllm(self) -> bool:
        return hasattr(self.engine, "llm")

    def _sampling(self, o: SamplingOverride) -> Any:
        base = self.engine.cfg.sampling
        upd = {k: v for k, v in (("temperature", o.temperature), ("top_p", o.top_p), ("max_tokens", o.max_tokens),
                                 ("stop", None if o.stop is None else list(o.stop))) if v is not None}
        return base.model_copy(update=upd)

    def _run_engine(self, calls: list[GenerateCall], members: list[tuple[int, Any]]) -> list[list[Any]]:
        prompts = [p.text for _, p in members]
        first = calls[members[0][0]]
        if self._is_vllm():
            from vllm import SamplingParams

            from ttp_ray.policy.engines.base import Generation, check_generations

            params = []
            for i, _ in members:
                s = self._sampling(calls[i].sampling)
                params.append(SamplingParams(n=calls[i].n, temperature=s.temperature, top_p=s.top_p,
                                             max_tokens=s.max_tokens, stop=list(s.stop) or None,
                                             logprobs=0 if s.logprobs else None, seed=calls[i].sampling.seed))
            outs = self.engine.llm.generate(prompts, params, use_tqdm=False)
            if len(outs) != len(prompts):
                raise RuntimeError(f"engine returned {len(outs)} outputs for {len(prompts)} prompts")
            return [check_generations([[Generation(c.text, len(c.token_ids), c.cumulative_logprob if p.logprobs
                                                   is not None else None)
                                        for c in sorted(o.outputs, key=lambda c: c.index)]], 1, p.n)[0]
                    for o, p in zip(outs, params, strict=True)]
        cfg = self.engine.cfg  # one group at a time (the coalescer never runs two passes at once)
        self.engine.cfg = cfg.model_copy(update={"sampling": self._sampling(first.sampling)})
        try:
            seeds = None if first.sampling.seed is None else [first.sampling.seed] * len(prompts)
            return self.engine.generate(prompts, first.n, seeds=seeds)
        finally:
            self.engine.cfg = cfg

    def _generate_group(self, calls: list[GenerateCall], members: list[tuple[int, Any]],
                        out: list[GenerateReply | Exception | None]) -> None:
        try:
            gens = self._run_engine(calls, members)
        except Exception as e:
            if len(members) == 1:
                out[members[0][0]] = e
                return
            for m in members:  # isolate the failing prompt(s)
                self._generate_group(calls, [m], out)
            return
        for (i, prompt), cands in zip(members, gens, strict=True):
            limit = calls[i].sampling.max_tokens or self.max_tokens
            out[i] = GenerateReply(
                candidates=[GeneratedCandidate(g.text, g.num_tokens, g.num_tokens >= limit, g.logprob) for g in cands],
                prompt_tokens=prompt.n_tokens,
                personalized=self.has_profile(calls[i].user_id),
            )
