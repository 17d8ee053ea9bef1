"""Config of the personalized policy: retrieval, prompt template and budget, engine and sampling.

`EngineConfig` is shared by the generation pipeline and the Serve deployment (`build_engine(cfg)`);
`PolicyConfig` drives `RagPolicy`. Both are plain `StageConfig`s, so unknown keys are errors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ttp_ray.config import StageConfig
from ttp_ray.models import ENCODER_DEFAULT, POLICY_DEFAULT

__all__ = ["EngineConfig", "PolicyConfig", "RetrievalConfig", "SamplingConfig"]


class SamplingConfig(StageConfig):
    """How each candidate is sampled (the same for every engine)."""

    temperature: float = Field(0.7, gt=0.0, description="Softmax temperature; > 0 (Best-of-N needs sampling).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(32, ge=1, description="Most new tokens per candidate.")
    stop: list[str] = Field(
        default_factory=lambda: ["\n"],
        description="Stop strings (excluded from the text). The default stops at the end of the first line, "
        "which suits one-line outputs (headlines, titles, commit subjects); use [] for long-form tasks.",
    )
    logprobs: bool = Field(
        True, description="Return each candidate's summed token log-probability under the raw model distribution."
    )


class EngineConfig(StageConfig):
    """Which inference engine serves the policy, and how."""

    backend: Literal["vllm", "hf"] = Field(
        "vllm", description="`vllm` (vllm.LLM, prefix caching) or `hf` (transformers generate; the fallback).")
    model: str = Field(
        POLICY_DEFAULT, description="Bundled short name, HF id or local folder (resolved with `resolve_model`).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="`auto`: float32 on CPU (bf16 is emulated and ~4x slower there), bfloat16 on GPU.")
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto", description="hf engine's attention kernel: `auto`/`flash_attention_2` take flash-attention 2 where "
        "it can run (flash_attn installed, CUDA, 16-bit weights) and fall back to sdpa with a log line. vLLM "
        "picks its own attention backend.")
    max_model_len: int = Field(2048, ge=16, description="Context length: prompt tokens + `sampling.max_tokens`.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism (GPUs per engine).")
    gpu_memory_utilization: float | None = Field(
        None, gt=0.0, le=1.0,
        description="vLLM memory share to reserve; null: 0.3 on CPU (share of RAM), 0.9 on GPU.")
    enable_prefix_caching: bool = Field(
        True, description="vLLM prefix caching: the N samples and few-shot prefixes share one prefill.")
    enforce_eager: bool = Field(
        False, description="vLLM: skip torch.compile / CUDA graphs. Starts much faster (CPU here: 84 s vs 229 s) "
        "but decodes slower (19 vs 58 tokens/s): for tests and short jobs.")
    seed: int = Field(
        0, description="vLLM: the engine-level seed (per-request seeds crashed the CPU engine). "
        "hf: base of the per-query seed (a hash of seed and query id), so each query is reproducible.")
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads for the hf engine; null: torch's default (Ray sets "
        "OMP_NUM_THREADS to the actor's num_cpus).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling parameters.")


class RetrievalConfig(StageConfig):
    """How the user's profile items are retrieved for a query."""

    method: Literal["bm25", "dense"] = Field(
        "bm25", description="`bm25` (bm25s, as LaMP) or `dense` (cosine over MiniLM sentence embeddings).")
    k: int = Field(4, ge=0, description="Profile items per prompt (LaMP's `num_retrieved`; 0 = no personalization).")
    bm25_tokenizer: Literal["whitespace", "words"] = Field(
        "whitespace", description="`whitespace`: LaMP's `text.split()` (case kept); `words`: bm25s' lowercase "
        "word tokens with English stop words removed (matches path pieces and punctuation-glued words).")
    encoder: str = Field(ENCODER_DEFAULT, description="Sentence encoder for `dense` retrieval.")
    cache_users: int = Field(
        4096, ge=1, description="Per-user indexes kept in memory (LRU); each is built on the user's first query.")


class PolicyConfig(StageConfig):
    """The personalized RAG policy: which profile items go into the prompt and how it is written."""

    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Profile retrieval.")
    template: Literal["auto", "fewshot", "lamp"] = Field(
        "auto",
        description="`fewshot`: a completion prompt showing the retrieved items as worked (input -> output) "
        "examples, then the query; `lamp`: LaMP's per-task instruction prompt in the model's chat template; "
        "`auto`: fewshot for the bundled SmolLM2 or a tokenizer without a chat template (measured: fewshot "
        "doubled its ROUGE-1 on the commit data), lamp otherwise.",
    )
    max_prompt_tokens: int = Field(
        1024, ge=8, description="Token budget of the whole prompt; the profile context is truncated to fit, "
        "the query never is (a query that alone exceeds it is an error).")
    example_order: Literal["most_relevant_last", "most_relevant_first"] = Field(
        "most_relevant_last", description="Order of few-shot examples (nearest the query = most relevant).")
