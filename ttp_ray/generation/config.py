"""`GenerationConfig`: the `generation:` section of a pipeline YAML."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ttp_ray.config import StageConfig
from ttp_ray.errors import TTPValidationError
from ttp_ray.policy.config import EngineConfig, PolicyConfig

__all__ = ["ActorsConfig", "GenerationConfig", "Mode", "RmTrainConfig"]

Mode = Literal["eval", "rm_train"]


class RmTrainConfig(StageConfig):
    """RM training pools: profile items replayed as pseudo-queries (leave-one-out retrieval)."""

    items_per_user: int = Field(
        10, ge=1, description="K: each user's latest profile items (with both input and output) used as pseudo-queries.")
    candidates_per_item: int = Field(8, ge=1, description="M': candidates sampled per pseudo-query.")


class ActorsConfig(StageConfig):
    """Ray placement of the two pipeline stages."""

    pool_size: int = Field(1, ge=1, description="Engine actors (each holds one engine; one per GPU is typical).")
    num_gpus: float = Field(
        0.0, ge=0.0, description="GPUs per engine actor (fractions share a GPU); >= tensor_parallel_size with TP.")
    num_cpus: float = Field(
        1.0, gt=0.0, description="CPUs per engine actor. Ray sets OMP_NUM_THREADS to it, so on CPU-only nodes it is "
        "also the engine's thread count.")
    batch_size: int = Field(
        8, ge=1, description="Queries per engine call; each call's candidates are committed as one atomic part "
        "file, so this is also the amount of work a crash can lose.")
    prompt_pool_size: int = Field(1, ge=1, description="Prompt-building actors (retrieval + templating).")
    prompt_num_cpus: float = Field(0.5, gt=0.0, description="CPUs per prompt-building actor.")
    profile_in_memory_mb: int = Field(
        1024, ge=0, description="A prompt actor loads profile.parquet whole when it is at most this size; larger "
        "profiles are read per batch with a user_id filter (keep the file sorted by user for row-group pruning).")


class GenerationConfig(StageConfig):
    """Candidate generation: policy (RAG prompt), engine, pool sizes, Ray resources."""

    engine: EngineConfig = Field(default_factory=EngineConfig, description="Inference engine and sampling.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Retrieval, template, prompt budget.")
    n_candidates: int = Field(30, ge=1, description="M: candidates per test query (`eval` mode).")
    rm_train: RmTrainConfig = Field(default_factory=RmTrainConfig, description="`rm_train` mode pools.")
    actors: ActorsConfig = Field(default_factory=ActorsConfig, description="Ray actor pools and batch size.")

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        e, p = self.engine, self.policy
        if p.max_prompt_tokens + e.sampling.max_tokens > e.max_model_len:
            raise TTPValidationError(
                f"`policy.max_prompt_tokens` ({p.max_prompt_tokens}) + `engine.sampling.max_tokens` "
                f"({e.sampling.max_tokens}) must be <= `engine.max_model_len` ({e.max_model_len})",
                parameter="policy.max_prompt_tokens", value=p.max_prompt_tokens)
        tp = e.tensor_parallel_size
        if tp > 1 and self.actors.num_gpus < tp:
            raise TTPValidationError(
                f"`engine.tensor_parallel_size`={tp} needs `actors.num_gpus` >= {tp}, got {self.actors.num_gpus}",
                parameter="actors.num_gpus", value=self.actors.num_gpus)
        if tp > 1 and e.backend != "vllm":
            raise TTPValidationError("tensor parallelism needs `engine.backend: vllm`",
                                     parameter="engine.tensor_parallel_size", value=tp)
        return self

    def n_for(self, mode: Mode) -> int:
        """Candidates per query in `mode`."""
        return self.n_candidates if mode == "eval" else self.rm_train.candidates_per_item

    def fingerprint(self, mode: Mode) -> dict[str, Any]:
        """The settings that change what is generated (not where or how fast): a resume must match them."""
        e = self.engine
        return {
            "mode": mode,
            "n": self.n_for(mode),
            "backend": e.backend,
            "model": e.model,
            "dtype": e.dtype,
            "max_model_len": e.max_model_len,
            "seed": e.seed,
            "sampling": e.sampling.model_dump(),
            "policy": self.policy.model_dump(),
            "rm_items_per_user": self.rm_train.items_per_user if mode == "rm_train" else None,
        }
