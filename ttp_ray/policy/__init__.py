"""The personalized policy: per-user retrieval, prompt templates within a token budget, inference engines.

Heavy imports (bm25s/numba, sentence-transformers, torch, vLLM) happen inside the functions that need them.
"""

from ttp_ray.policy.config import EngineConfig, PolicyConfig, RetrievalConfig, SamplingConfig
from ttp_ray.policy.engines import Engine, EngineError, Generation, build_engine
from ttp_ray.policy.prompts import PromptTooLongError
from ttp_ray.policy.rag import RagPolicy, load_tokenizer

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineError",
    "Generation",
    "PolicyConfig",
    "PromptTooLongError",
    "RagPolicy",
    "RetrievalConfig",
    "SamplingConfig",
    "build_engine",
    "load_tokenizer",
]
