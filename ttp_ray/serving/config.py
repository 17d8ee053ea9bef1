"""`ServingConfig`: everything `ttp serve` needs, validated before a single replica starts.

Groups (YAML sections): the reward model (`rm_dir`, `rm_variant`, `rm_version`), the policy (`policy`, optional:
without it the service only selects among caller-supplied candidates), input `bounds`, `auth`, one section per
deployment (`ingress`, `scorer`, `policy`) with replicas/autoscaling/`max_ongoing_requests`, and the HTTP
`host`/`port`. No secret ever lives here: the bearer token comes from an environment variable or a file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, field_validator, model_validator

from ttp_ray.config import StageConfig
from ttp_ray.policy.config import EngineConfig, PolicyConfig

RmVariant = Literal["global-det", "global-prob", "user-det", "user-prob"]


class BoundsConfig(StageConfig):
    """Hard limits on request inputs; a violation is a 4xx that names the field, never a 5xx."""

    max_n: int = Field(16, ge=1, le=1024, description="Largest `n` (candidates to generate) per request.")
    max_candidates: int = Field(64, ge=1, le=4096, description="Most candidates in one /v1/select request.")
    max_candidate_chars: int = Field(4000, ge=1, description="Longest candidate text, in characters.")
    max_query_chars: int = Field(8000, ge=1, description="Longest query (or chat message), in characters.")
    max_messages: int = Field(64, ge=1, description="Most messages in one chat completion request.")
    max_user_id_chars: int = Field(128, ge=1, le=1024, description="Longest `user_id`, in characters.")
    user_id_pattern: str = Field(
        r"[A-Za-z0-9][A-Za-z0-9_.:@-]*",
        description="Characters a `user_id` may use; matched against the whole id (no lookarounds).",
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, description="Largest request body in bytes; enforced before the body is parsed."
    )

    @field_validator("user_id_pattern")
    @classmethod
    def _pattern_compiles(cls, v: str) -> str:
        # The request models match it with pydantic's engine (Rust regex: no lookarounds/backreferences).
        try:
            TypeAdapter(Annotated[str, Field(pattern=f"^(?:{v})$")])
        except Exception as e:
            raise ValueError(f"user_id_pattern is not a valid regular expression: {e}") from None
        return v

    @property
    def user_id_regex(self) -> str:
        """The pattern anchored at both ends (pydantic's `pattern` searches, we want a full match)."""
        return f"^(?:{self.user_id_pattern})$"


class AuthConfig(StageConfig):
    """Bearer-token auth. The token is read from `token_file` if set, else from the env var `token_env`."""

    token_env: str = Field("TTP_API_TOKEN", min_length=1, description="Environment variable holding the token.")
    token_file: str | None = Field(None, description="File holding the token (first line); outside the repo.")
    allow_unauthenticated: bool = Field(
        False, description="Serve without a token. Must be set explicitly; otherwise a missing token is fatal."
    )
    min_token_chars: int = Field(16, ge=1, description="Shortest token accepted at startup.")


class AutoscalingSection(StageConfig):
    """Ray Serve autoscaling (a subset of `ray.serve.config.AutoscalingConfig`, same names)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSection:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


class DeploymentSection(StageConfig):
    """Replica count or autoscaling, per-replica concurrency and resources of one deployment."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count; ignored when `autoscaling` is set.")
    autoscaling: AutoscalingSection | None = Field(None, description="Autoscale between min and max replicas.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests in flight per replica before queueing.")
    num_cpus: float = Field(0.5, ge=0, description="Logical CPUs reserved per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per replica.")
    max_surge_percent: int = Field(
        100, ge=0, le=100, description="Extra replicas during a rolling update (>0: old replicas serve until new are ready)."
    )

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        opts: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_surge_percent": self.max_surge_percent,
        }
        if self.autoscaling is None:
            opts["num_replicas"] = self.num_replicas
        else:
            opts["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
        return opts


class BatchedDeploymentSection(DeploymentSection):
    """A deployment whose replicas batch concurrent calls (`@serve.batch`) into one forward pass."""

    max_batch_size: int = Field(16, ge=1, description="Most requests merged into one forward pass.")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="How long the first request of an idle replica waits for company. Requests that "
        "arrive while a pass runs are merged into the next one regardless (continuous batching).")

    @model_validator(mode="after")
    def _batch_fits(self) -> BatchedDeploymentSection:
        if self.max_batch_size > self.max_ongoing_requests:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) must be <= max_ongoing_requests "
                f"({self.max_ongoing_requests}), or batches can never fill"
            )
        return self


class ScorerSection(BatchedDeploymentSection):
    """The reward-model deployment."""

    device: str = Field("cpu", description="Torch device of the reward model.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per replica (None: Ray's).")


class PolicySection(BatchedDeploymentSection):
    """The policy deployment: an engine (hf | vllm) plus RAG prompts over the users' stored profiles."""

    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine (vllm | hf) and sampling.")
    rag: PolicyConfig = Field(default_factory=PolicyConfig, description="Retrieval and prompt template.")
    profile_path: str = Field(..., description="PROFILE Parquet of the served users (never returned to callers).")
    task: str = Field("commit_subject", description="Task name the prompt builder formats for.")
    max_batch_size: int = Field(8, ge=1, description="Most generate requests merged into one engine call.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long the first request of an idle replica "
                                        "waits for company (negligible next to generation time).")

    @model_validator(mode="after")
    def _prompt_fits_context(self) -> PolicySection:
        # Otherwise a long (but in-bounds) query would fail inside the engine instead of being truncated.
        need = self.rag.max_prompt_tokens + self.engine.sampling.max_tokens
        if need > self.engine.max_model_len:
            raise ValueError(
                f"rag.max_prompt_tokens ({self.rag.max_prompt_tokens}) + engine.sampling.max_tokens "
                f"({self.engine.sampling.max_tokens}) = {need} exceeds engine.max_model_len ({self.engine.max_model_len})"
            )
        return self


class ServingConfig(StageConfig):
    """Configuration of the personalized best-of-N service (`ttp serve`, `jobs/serve.py`, `serve run`)."""

    # Reward model
    rm_dir: str = Field(..., description="Reward-model checkpoint directory (the `{run_dir}/rm/{dataset}` level).")
    rm_variant: RmVariant = Field("user-prob", description="Which of the four RM variants scores candidates.")
    rm_version: str | None = Field(
        None, description="Label reported with every score; default: a digest of the checkpoint's manifest."
    )
    # Policy (optional: without it only /v1/select is served)
    policy: PolicySection | None = Field(None, description="Generation; omit for a select-only service.")
    served_model_name: str = Field("ttp-best-of-n", min_length=1, description="`model` in OpenAI responses.")
    default_n: int = Field(4, ge=1, description="Candidates generated when a request does not give `n`.")
    # Limits and security
    bounds: BoundsConfig = Field(default_factory=BoundsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    # Deployments
    ingress: DeploymentSection = Field(default_factory=DeploymentSection)
    scorer: ScorerSection = Field(default_factory=ScorerSection)
    # HTTP
    host: str = Field("127.0.0.1", description="Address the Serve HTTP proxy binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port the Serve HTTP proxy binds.")
    request_timeout_s: float | None = Field(
        120.0, gt=0, description="End-to-end HTTP timeout at the proxy (a stuck request becomes a 408, not a hang).")
    max_queued_requests: int = Field(
        64, ge=0, description="Generate/completion requests in flight per ingress replica; one more is a 503 with "
        "Retry-After at once (not a wait until the proxy's timeout).")
    request_deadline_s: float | None = Field(
        60.0, gt=0, description="Per-request deadline inside the ingress: past it the request is cancelled and "
        "answered 504. null: none (the proxy's request_timeout_s still applies).")
    retry_after_s: int = Field(1, ge=1, description="`Retry-After` seconds sent with a 503.")
    access_log: bool = Field(True, description="Serve's per-request access log lines in every replica.")
    app_name: str = Field("ttp", min_length=1, description="Serve application name.")
    route_prefix: str = Field("/", pattern=r"^/", description="HTTP route prefix of the application.")

    @model_validator(mode="after")
    def _default_n_within_bounds(self) -> ServingConfig:
        if self.default_n > self.bounds.max_n:
            raise ValueError(f"default_n ({self.default_n}) must be <= bounds.max_n ({self.bounds.max_n})")
        return self
