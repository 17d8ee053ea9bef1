"""The OpenAI-compatible half of the ingress: `/v1/chat/completions` and `/v1/completions`, best-of-N.

Semantics (OpenAI's `best_of`/`n`, which vLLM dropped): `best_of` candidates are sampled, every one is ranked by
the request's `selection` (the user's RM by default; MBR or the policy's log-prob on request), and the best `n`
come back as `choices`, best first. `usage.completion_tokens` counts every sampled token. `stream=true` sends the
selected choices as SSE chunks in OpenAI's chunk format, then `data: [DONE]`; nothing can be streamed before
selection, so the first chunk waits for all candidates.

Kept Ray-free apart from the ingress it is given, so the ranking and the chunk format are unit-testable.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ttp_ray.errors import TTPValidationError
from ttp_ray.serving.policy_runtime import GenerateReply, SamplingOverride
from ttp_ray.serving.schemas import CandidateScore, ScoredCandidate, TTPExtension, Usage

if TYPE_CHECKING:
    from ttp_ray.serving.deployments import ScoreReply


def rank(method: str, gen: GenerateReply, s: ScoreReply) -> list[int]:
    """Candidate indices, best first: by RM mu, MBR consensus (ROUGE-1) or per-token policy log-prob.

    Stable: ties keep generation order (the RM's argmax picks the first on ties, as /v1/select does).
    """
    from ttp_ray.scoring.selectors import logprob_scores, mbr_scores

    texts = [c.text for c in gen.candidates]
    if method == "rm":
        scores = np.asarray(s.mu, dtype=np.float64)
    elif method == "mbr":
        scores = mbr_scores(texts) if len(texts) > 1 else np.zeros(len(texts))
    elif method == "logprob":
        lp = np.array([np.nan if c.logprob is None else c.logprob for c in gen.candidates], dtype=np.float64)
        if np.isnan(lp).all():
            raise TTPValidationError("the policy engine reports no log-probs (engine.sampling.logprobs: false)",
                                     parameter="selection", value=method)
        scores = logprob_scores(lp, np.array([c.num_tokens for c in gen.candidates]), per_token=True)
    else:  # the request model only admits the three
        raise TTPValidationError(f"unknown selection method {method!r}", parameter="selection", value=method)
    return sorted(range(len(texts)), key=lambda i: -scores[i])


def sampling_of(req: Any) -> SamplingOverride:
    return SamplingOverride(temperature=req.temperature, top_p=req.top_p, max_tokens=req.token_limit(),
                            stop=req.stops(), seed=req.seed)


def extension(req: Any, gen: GenerateReply, s: ScoreReply, order: list[int]) -> TTPExtension:
    """The `ttp` key: who scored, how, the returned choices' scores and (on request) every candidate."""
    def sig(i: int) -> float | None:
        return None if s.sigma is None else s.sigma[i]

    best = order[0]
    cands = [ScoredCandidate(index=i, text=c.text, num_tokens=c.num_tokens, mu=s.mu[i], sigma=sig(i))
             for i, c in enumerate(gen.candidates)]
    return TTPExtension(
        user_id=req.user_id(), fallback=s.fallback, rm_method=s.method, rm_version=s.rm_version,
        chosen_index=best, chosen_text=gen.candidates[best].text, personalized_prompt=gen.personalized,
        selection=req.selection, best_of=len(gen.candidates),
        choices=[CandidateScore(index=i, mu=s.mu[i], sigma=sig(i)) for i in order[:req.n]],
        candidates=cands if req.ttp_candidates else None,
    )


def usage(gen: GenerateReply) -> Usage:
    completion = sum(c.num_tokens for c in gen.candidates)
    return Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=completion,
                 total_tokens=gen.prompt_tokens + completion)


def finish_reason(gen: GenerateReply, i: int) -> str:
    return "length" if gen.candidates[i].truncated else "stop"


def new_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"


def sse_chunks(chat: bool, model: str, gen: GenerateReply, order: list[int], n: int,
               ext: TTPExtension) -> Iterator[str]:
    """OpenAI's streaming format for already-selected choices: per choice a role chunk (chat), its text and its
    finish_reason; the last chunk also carries `usage` and the `ttp` extension; then `data: [DONE]`."""
    cid, created = new_id(chat), int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {"id": cid, "object": kind, "created": created, "model": model, "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=True)}\n\n"

    def choice(k: int, content: str | None, role: bool = False, finish: str | None = None) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if content is not None:
                delta["content"] = content
            return {"index": k, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": k, "text": content or "", "finish_reason": finish, "logprobs": None}

    for k, i in enumerate(order[:n]):
        if chat:
            yield chunk([choice(k, "", role=True)])
        yield chunk([choice(k, gen.candidates[i].text)])
        yield chunk([choice(k, None if chat else "", finish=finish_reason(gen, i))])
    yield chunk([], usage=usage(gen).model_dump(), ttp=ext.model_dump(mode="json"))
    yield "data: [DONE]\n\n"
