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
class GenerateCall:
    user_id: str | None  # None: no personal context (the prompt shows no profile items)
    query: str
    n: int


@dataclass(frozen=True)
class GeneratedCandidate:
    text: str
    num_tokens: int
    truncated: bool  # reached sampling.max_tokens


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
        """One engine call per distinct `n`; each call gets its reply or its own exception."""
        out: list[GenerateReply | Exception | None] = [None] * len(calls)
        groups: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for i, call in enumerate(calls):
            try:
                prompt = self.rag.build("" if call.user_id is None else call.user_id, self.task, call.query)
            except Exception as e:  # PromptTooLongError is a TTPValidationError -> 422 at the ingress
                out[i] = e
                continue
            groups[call.n].append((i, prompt))
        for n, members in groups.items():
            self._generate_group(calls, n, members, out)
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]

    def _generate_group(self, calls: list[GenerateCall], n: int, members: list[tuple[int, Any]],
                        out: list[GenerateReply | Exception | None]) -> None:
        try:
            gens = self.engine.generate([p.text for _, p in members], n)
        except Exception as e:
            if len(members) == 1:
                out[members[0][0]] = e
                return
            for m in members:  # isolate the failing prompt(s)
                self._generate_group(calls, n, [m], out)
            return
        for (i, prompt), cands in zip(members, gens, strict=True):
            out[i] = GenerateReply(
                candidates=[GeneratedCandidate(g.text, g.num_tokens, g.num_tokens >= self.max_tokens) for g in cands],
                prompt_tokens=prompt.n_tokens,
                personalized=self.has_profile(calls[i].user_id),
            )
