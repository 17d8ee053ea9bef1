"""The engine interface shared by the generation pipeline and the Serve deployment.

An engine turns prompts into `n` sampled candidates each. Engines are built inside the process that uses them
(a Ray Data actor, a Serve replica), so their modules import vLLM/torch lazily and stay cheap to import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Engine", "EngineError", "Generation", "check_generations", "query_seed"]


@dataclass(frozen=True)
class Generation:
    """One sampled candidate."""

    text: str  # stop strings excluded
    num_tokens: int  # generated tokens, the finishing EOS/stop token included
    logprob: float | None  # sum of the tokens' log-probabilities under the raw model distribution, if asked


class EngineError(RuntimeError):
    """The engine broke its contract (wrong number of outputs) or failed as a whole."""


@runtime_checkable
class Engine(Protocol):
    """Samples `n` candidates per prompt: one list of `n` per prompt, in input order."""

    def generate(
        self, prompts: list[str], n: int, *, seeds: Sequence[int] | None = None
    ) -> list[list[Generation]]:
        """`seeds`, one per prompt, make a prompt's samples reproducible where the engine allows (hf)."""
        ...

    def close(self) -> None:
        """Release the engine now (vLLM: stop its engine-core process). Idempotent; `generate` fails after it."""
        ...


def check_generations(outputs: Sequence[Sequence[Generation]], n_prompts: int, n: int) -> list[list[Generation]]:
    """Never trust that an engine honoured `n`: exactly `n_prompts` lists of exactly `n` candidates."""
    if len(outputs) != n_prompts:
        raise EngineError(f"engine returned {len(outputs)} outputs for {n_prompts} prompts")
    for i, outs in enumerate(outputs):
        if len(outs) != n:
            raise EngineError(f"engine returned {len(outs)} candidates for prompt #{i}, asked for n={n}")
    return [list(o) for o in outputs]


def query_seed(base: int, key: str) -> int:
    """A stable 63-bit seed from (`base`, `key`): the same query gets the same samples in every run."""
    digest = hashlib.blake2b(f"{base}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
