"""The two model deployments behind the ingress: the reward scorer and the policy.

Both merge concurrent calls into one RM forward pass / one engine call: `@serve.batch` groups what arrives
together, and a `Coalescer` merges every group still waiting when the model becomes free (see batching.py).
The blocking model code runs in a worker thread, so the replica's event loop keeps accepting requests.

The scorer's checkpoint comes from its `user_config` (`rm_dir`, `rm_variant`, `rm_version`): `reconfigure`
loads the new checkpoint off the event loop and swaps it in atomically, so batches already running finish on
the old model and no request is dropped (`serve deploy` with a changed user_config updates replicas in place;
`serve.run` replaces them with a surge rolling update).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ray import serve

from ttp_ray.serving.batching import Coalescer
from ttp_ray.serving.config import PolicySection
from ttp_ray.serving.policy_runtime import GenerateCall, GenerateReply

log = logging.getLogger("ray.serve")


# ------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class ScoreCall:
    user_id: str | None  # None: score with the global RM
    query: str
    candidates: list[str]


@dataclass(frozen=True)
class ScoreReply:
    mu: list[float]
    sigma: list[float] | None
    fallback: bool
    method: str
    rm_version: str

    def best(self) -> int:
        """argmax mu, first on ties (the paper selects on the mean only)."""
        return max(range(len(self.mu)), key=self.mu.__getitem__)


# ------------------------------------------------------------------------------------------- scorer
@dataclass(frozen=True)
class _LoadedRM:
    scorer: Any  # ttp_ray.reward.scorer.RewardScorer
    rm_dir: str
    variant: str
    version: str


def checkpoint_version(rm_dir: str, variant: str) -> str:
    """`<variant>@<digest of manifest.json>`: changes whenever a new checkpoint is written there."""
    from ttp_ray.reward.scorer import resolve_variant_dir

    manifest = resolve_variant_dir(rm_dir, variant) / "manifest.json"
    return f"{variant}@{hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]}"


@serve.deployment(name="RewardScorer")
class ScorerDeployment:
    """Scores (user, query, candidates) with the user's RM; unknown users fall back to the global head."""

    def __init__(self, max_batch_size: int, batch_wait_timeout_s: float, max_ongoing_requests: int,
                 device: str = "cpu", torch_threads: int | None = None) -> None:
        from ttp_ray.serving.metrics import ScorerMetrics

        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self._device = device
        self._rm: _LoadedRM | None = None
        self._reload_lock = asyncio.Lock()
        self._metrics = ScorerMetrics()
        self._candidates = 0
        self._coalescer: Coalescer[ScoreCall, ScoreReply | Exception] = Coalescer(self._score_pass, max_batch_size)
        self._enqueue = batched(self._coalescer.submit, max_batch_size, batch_wait_timeout_s, max_ongoing_requests)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load `user_config["rm_dir"]` / `["rm_variant"]` and swap it in (no-op if already loaded)."""
        rm_dir, variant = str(user_config["rm_dir"]), str(user_config["rm_variant"])
        async with self._reload_lock:
            version = user_config.get("rm_version") or checkpoint_version(rm_dir, variant)
            cur = self._rm
            if cur is not None and (cur.rm_dir, cur.variant, cur.version) == (rm_dir, variant, version):
                return
            scorer = await asyncio.to_thread(self._load, rm_dir, variant)
            if not user_config.get("rm_version"):  # a save may have swapped versions since: label what was loaded
                version = f"{variant}@{scorer.ckpt.manifest_sha256[:12]}"
            self._rm = _LoadedRM(scorer, rm_dir, variant, version)  # atomic: running batches keep the old one
            log.info("reward model %s loaded from %s (was %s)", version, rm_dir, cur.version if cur else None)

    def _load(self, rm_dir: str, variant: str) -> Any:
        from ttp_ray.reward.scorer import RewardScorer

        scorer = RewardScorer.from_checkpoint(rm_dir, variant=variant, device=self._device)
        scorer.score("__warmup__", "warm-up query", ["warm-up candidate"])  # first call pays lazy init
        return scorer

    def info(self) -> dict[str, Any]:
        """The loaded checkpoint and this replica's cumulative batching counters."""
        rm = self._loaded()
        return {"rm_version": rm.version, "rm_variant": rm.variant, "n_users": len(rm.scorer.known_users),
                "passes": self._coalescer.passes, "calls": self._coalescer.items, "candidates": self._candidates}

    def _loaded(self) -> _LoadedRM:
        if self._rm is None:  # Serve calls reconfigure before routing traffic; this is a misconfiguration
            raise RuntimeError("RewardScorer has no checkpoint: deploy it with user_config={'rm_dir', 'rm_variant'}")
        return self._rm

    async def score(self, call: ScoreCall) -> ScoreReply:
        return _raise_if_error(await self._enqueue(call))

    def _score_pass(self, calls: list[ScoreCall]) -> list[ScoreReply | Exception]:
        """One forward pass (worker thread); if it fails, score one by one so only the bad call fails."""
        rm = self._loaded()  # one model for the whole pass, even if a reload swaps it meanwhile
        n_cands = sum(len(c.candidates) for c in calls)
        self._candidates += n_cands
        self._metrics.batch_size.observe(n_cands)
        try:
            results = rm.scorer.score_batch([_as_request(c) for c in calls])
            return [self._reply(rm, c, r) for c, r in zip(calls, results, strict=True)]
        except Exception as e:
            if len(calls) == 1:
                return [e]
        replies: list[ScoreReply | Exception] = []
        for c in calls:
            try:
                replies.append(self._reply(rm, c, rm.scorer.score(*_as_request(c))))
            except Exception as e:
                replies.append(e)
        return replies

    def _reply(self, rm: _LoadedRM, call: ScoreCall, res: Any) -> ScoreReply:
        mu = [float(x) for x in res.mu]
        sigma = None if res.sigma is None else [float(x) for x in res.sigma]
        if not all(math.isfinite(x) for x in mu + (sigma or [])):
            raise RuntimeError(f"reward model {rm.version} returned non-finite scores")
        self._metrics.record(res.method, len(call.candidates), bool(res.fallback))
        return ScoreReply(mu, sigma, bool(res.fallback), res.method, rm.version)


def batched(submit: Callable[[list[Any]], Awaitable[list[Any]]], max_batch_size: int, batch_wait_timeout_s: float,
            max_ongoing_requests: int) -> Callable[[Any], Awaitable[Any]]:
    """`@serve.batch` in front of a coalescer, sized from the deployment's config.

    Enough concurrent batches that a group never waits for another to finish (the coalescer merges them),
    and no more than `max_ongoing_requests` items in flight (Serve warns otherwise).
    """
    return serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s,
                       max_concurrent_batches=max(1, max_ongoing_requests // max_batch_size))(submit)


def _as_request(call: ScoreCall) -> tuple[str, str, list[str]]:
    # "" is never a known user (the id pattern requires a first character): the global head scores it.
    return ("" if call.user_id is None else call.user_id, call.query, call.candidates)


def _raise_if_error(out: Any) -> Any:
    """Batched methods return per-call exceptions as values (one bad call must not fail its batch)."""
    if isinstance(out, BaseException):
        raise out
    return out


# ------------------------------------------------------------------------------------------- policy
@serve.deployment(name="Policy")
class PolicyDeployment:
    """Builds the user's RAG prompt from the stored profile and samples `n` candidates from the engine."""

    def __init__(self, section: dict[str, Any]) -> None:
        from ttp_ray.serving.policy_runtime import PolicyRuntime

        cfg = PolicySection.model_validate(section)
        self._runtime = PolicyRuntime.from_section(cfg)
        self._coalescer: Coalescer[GenerateCall, GenerateReply | Exception] = Coalescer(
            self._runtime.generate, cfg.max_batch_size)
        self._enqueue = batched(self._coalescer.submit, cfg.max_batch_size, cfg.batch_wait_timeout_s,
                                cfg.max_ongoing_requests)

    async def generate(self, call: GenerateCall) -> GenerateReply:
        return _raise_if_error(await self._enqueue(call))
