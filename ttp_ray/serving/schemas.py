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


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TTPExtension(Selection):
    """The best-of-N details OpenAI's schema has no room for: every candidate and its score."""

    personalized_prompt: bool
    candidates: list[ScoredCandidate]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice] = Field(description="Exactly one: the selected candidate.")
    usage: Usage
    ttp: TTPExtension = Field(description="Extension: the candidates, their scores and the RM that chose.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ttp-ray"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]
    rm_version: str
    generation: bool


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


def build_request_models(b: BoundsConfig, default_n: int, fixed_max_tokens: int | None = None) -> RequestModels:
    """Request models whose constraints are the configured bounds (they appear in the OpenAPI schema).

    `fixed_max_tokens` is the deployment's fixed `policy.engine.sampling.max_tokens`: a chat request may not ask
    for fewer (that limit could not be honoured), only for as many or more.
    """
    UserId = Annotated[str, Field(min_length=1, max_length=b.max_user_id_chars, pattern=b.user_id_regex,
                                  description="The user whose reward model (and profile) is used.")]
    Query = Annotated[str, Field(min_length=1, max_length=b.max_query_chars), AfterValidator(_utf8)]
    Candidate = Annotated[str, Field(min_length=1, max_length=b.max_candidate_chars), AfterValidator(_utf8)]
    N = Annotated[int, Field(strict=True, ge=1, le=b.max_n, description="Number of candidates to generate and score.")]

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

    class ChatCompletionRequest(BaseModel):
        """OpenAI chat completions. `user` picks the personal RM; `n` is the number of candidates; the last
        `user` message is the query. Sampling (temperature, top_p, ...) is fixed by the deployment; those and
        other unknown OpenAI fields are accepted and ignored. `max_tokens` below the deployment's is refused."""

        model_config = ConfigDict(extra="ignore")
        model: str = Field(max_length=256, description="Accepted for compatibility; one model is served.")
        messages: list[ChatMessage] = Field(min_length=1, max_length=b.max_messages)
        user: UserId | None = Field(None, description="User id; without it the global RM scores.")
        n: N = default_n
        stream: bool | None = Field(
            None, description="Must be false: best-of-N selects after all candidates finish.")
        max_tokens: int | None = Field(None, ge=1, description=f"Must be >= the deployment's {fixed_max_tokens}.")
        max_completion_tokens: int | None = Field(None, ge=1, description="Same as `max_tokens`.")

        @field_validator("max_tokens", "max_completion_tokens")
        @classmethod
        def _not_below_deployment(cls, v: int | None) -> int | None:
            if v is not None and fixed_max_tokens is not None and v < fixed_max_tokens:
                raise ValueError(f"{v} is below this deployment's fixed limit of {fixed_max_tokens} tokens per "
                                 "candidate; omit it or ask for at least that")
            return v

        @field_validator("stream")
        @classmethod
        def _no_stream(cls, v: bool | None) -> bool | None:
            if v:
                raise ValueError("stream=true is not supported: best-of-N selects after all candidates finish")
            return v

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

    return RequestModels(SelectRequest, GenerateRequest, ChatCompletionRequest)
