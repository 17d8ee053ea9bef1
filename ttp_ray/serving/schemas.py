"""HTTP request/response models of the service (published at /openapi.json).

Request models are built from the configured `BoundsConfig`, so the published schema states the real limits
(max lengths, max items, the user-id pattern) and pydantic rejects violations with a 422 naming the field.
Responses never include a user's profile or the RAG prompt built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ttp_ray.serving.config import BoundsConfig


def _utf8(v: str) -> str:
    """JSON allows lone surrogates (`"\\ud800"`); tokenizers do not. Reject them here, as a 422."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (found an unpaired surrogate)") from None
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------------------------- responses
class CandidateScore(BaseModel):
    index: int = Field(description="Position of the candidate in the request / generation order.")
    mu: float = Field(description="Predicted reward (mean); selection is argmax mu.")
    sigma: float | None = Field(description="Predicted std of the reward (probabilistic RMs), else null.")


class ScoredCandidate(CandidateScore):
    text: str
    num_tokens: int | None = Field(None, description="Generated tokens (generated candidates only).")


class Selection(BaseModel):
    user_id: str | None
    fallback: bool = Field(description="True when the user has no personal RM and the global RM scored.")
    rm_method: str = Field(description="RM variant serving, e.g. user-prob (its global head when fallback=true).")
    rm_version: str = Field(description="Version of the reward-model checkpoint that answered.")
    chosen_index: int = Field(description="Index of the selected candidate (argmax mu, first on ties).")
    chosen_text: str


class SelectResponse(Selection):
    scores: list[CandidateScore]


class GenerateResponse(Selection):
    personalized_prompt: bool = Field(description="True when the prompt used the user's stored profile.")
    candidates: list[ScoredCandidate]


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = Field(description="Every generated token: all `best_of` candidates, not only the "
                                               "returned ones.")
    total_tokens: int


class TTPExtension(Selection):
    """The best-of-N details OpenAI's schema has no room for (`chosen_*` is the first choice)."""

    personalized_prompt: bool
    selection: Literal["rm", "mbr", "logprob"] = Field(description="The method that ranked the candidates.")
    best_of: int = Field(description="Candidates sampled.")
    choices: list[CandidateScore] = Field(description="The returned choices' candidate index, mu and sigma, in "
                                                      "choice order (mu is always the RM's, whatever ranked).")
    candidates: list[ScoredCandidate] | None = Field(
        None, description="Every candidate and its score; only when the request sets `ttp_candidates: true`.")


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice] = Field(description="The `n` best of `best_of` candidates, best first.")
    usage: Usage
    ttp: TTPExtension = Field(description="Extension: the candidates, their scores and the RM that chose.")


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice] = Field(description="The `n` best of `best_of` candidates, best first.")
    usage: Usage
    ttp: TTPExtension


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ttp-ray"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """Without a valid token only `status`; with one, also the RM version and whether generation is served."""

    status: Literal["ok"]
    rm_version: str | None = None
    generation: bool | None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody


# ------------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class RequestModels:
    select: type[BaseModel]
    generate: type[BaseModel]
    chat: type[BaseModel]
    completion: type[BaseModel]


def build_request_models(b: BoundsConfig, default_n: int, max_tokens: int | None = None) -> RequestModels:
    """Request models whose constraints are the configured bounds (they appear in the OpenAPI schema).

    `max_tokens` is the deployment's `policy.engine.sampling.max_tokens`: the default and the upper bound of a
    request's `max_tokens` (a smaller value is honoured).
    """
    token_cap = max_tokens  # class bodies below define a field of that name
    UserId = Annotated[str, Field(min_length=1, max_length=b.max_user_id_chars, pattern=b.user_id_regex,
                                  description="The user whose reward model (and profile) is used.")]
    Query = Annotated[str, Field(min_length=1, max_length=b.max_query_chars), AfterValidator(_utf8)]
    Candidate = Annotated[str, Field(min_length=1, max_length=b.max_candidate_chars), AfterValidator(_utf8)]
    N = Annotated[int, Field(strict=True, ge=1, le=b.max_n, description="Number of candidates to generate and score.")]
    Stop = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_utf8)]

    class SelectRequest(_Strict):
        """Score caller-supplied candidates with the user's RM and pick the best."""

        user_id: UserId
        query: Query
        candidates: list[Candidate] = Field(min_length=1, max_length=b.max_candidates)

    class GenerateRequest(_Strict):
        """Generate `n` candidates from the user's RAG prompt, score them, pick the best."""

        user_id: UserId
        query: Query
        n: N = default_n

    class TextPart(BaseModel):
        model_config = ConfigDict(extra="ignore")
        type: Literal["text"]
        text: Query

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="ignore")
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: Query | Annotated[list[TextPart], Field(min_length=1, max_length=b.max_messages)] | None = None

        def text(self) -> str:
            if isinstance(self.content, list):
                return "\n".join(p.text for p in self.content)
            return self.content or ""

    class _OpenAIBestOfN(_Strict):
        """What both OpenAI endpoints honour. Any other field is a 422 naming it (never silently ignored)."""

        model: str = Field(max_length=256, description="Accepted for compatibility; one model is served.")
        user: UserId | None = Field(None, description="User id: picks the personal RM (and profile); without "
                                                      "it, or for an unknown user, the global RM scores.")
        safety_identifier: UserId | None = Field(None, description="OpenAI's successor of `user`; same meaning.")
        best_of: N | None = Field(None, description=f"Candidates to sample (default max({default_n}, n)).")
        n: N = Field(1, description="Candidates returned, best first by the selection method; <= best_of.")
        temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature.")
        top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
        max_tokens: int | None = Field(None, ge=1, le=token_cap, description="Most tokens per candidate.")
        stop: Stop | list[Stop] | None = Field(None, description="Up to 4 stop strings (replace the deployment's).")
        seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Makes the candidates reproducible.")
        stream: bool | None = Field(None, description="SSE chunks of the selected choice(s), then [DONE]. The first "
                                                      "chunk comes only after every candidate is generated and ranked.")
        selection: Literal["rm", "mbr", "logprob"] = Field(
            "rm", description="Extension: rank by the user's RM (mu), by consensus (MBR, ROUGE-1) or by the "
                              "policy's per-token log-prob.")
        ttp_candidates: bool = Field(False, description="Extension: return every candidate under `ttp`.")

        @field_validator("stop")
        @classmethod
        def _at_most_4(cls, v: str | list[str] | None) -> str | list[str] | None:
            if isinstance(v, list) and len(v) > 4:
                raise ValueError(f"at most 4 stop strings, got {len(v)}")
            return v

        @model_validator(mode="after")
        def _n_within_best_of(self) -> Any:
            if self.best_of is not None and self.n > self.best_of:
                raise ValueError(f"n ({self.n}) must be <= best_of ({self.best_of}): n of the best_of candidates "
                                 "are returned")
            if self.user is not None and self.safety_identifier is not None and self.user != self.safety_identifier:
                raise ValueError("user and safety_identifier name different users; give one")
            return self

        def user_id(self) -> str | None:
            return self.safety_identifier if self.safety_identifier is not None else self.user

        def candidates_to_sample(self) -> int:
            return self.best_of if self.best_of is not None else min(max(default_n, self.n), b.max_n)

        def stops(self) -> tuple[str, ...] | None:
            return None if self.stop is None else ((self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    class ChatCompletionRequest(_OpenAIBestOfN):
        """OpenAI chat completions, best-of-N: the last `user` message is the query."""

        messages: list[ChatMessage] = Field(min_length=1, max_length=b.max_messages)
        max_completion_tokens: int | None = Field(None, ge=1, le=token_cap, description="Same as `max_tokens`.")

        @model_validator(mode="after")
        def _has_query(self) -> Any:
            query = self.query()
            if not query.strip():
                raise ValueError("messages must contain a non-empty message with role 'user'")
            if len(query) > b.max_query_chars:
                raise ValueError(f"the last user message is {len(query)} characters; bounds.max_query_chars "
                                 f"is {b.max_query_chars}")
            return self

        def query(self) -> str:
            users = [m for m in self.messages if m.role == "user"]
            return users[-1].text() if users else ""

        def token_limit(self) -> int | None:
            return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    class CompletionRequest(_OpenAIBestOfN):
        """OpenAI (legacy) completions, best-of-N: `prompt` is the query."""

        prompt: Query | Annotated[list[Query], Field(min_length=1, max_length=1)]

        def query(self) -> str:
            return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

        def token_limit(self) -> int | None:
            return self.max_tokens

    return RequestModels(SelectRequest, GenerateRequest, ChatCompletionRequest, CompletionRequest)
