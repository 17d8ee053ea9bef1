"""Score candidates with a trained reward-model variant: the API the Serve endpoint and batch scoring share.

    scorer = RewardScorer.from_checkpoint("runs/x/rm/commits", variant="user-prob")
    res = scorer.score("u1", "Fix the flaky test in …", ["fix flaky test", "update docs"])
    best = int(res.mu.argmax())          # selection uses μ only; σ is reported, never used to select

Unknown users (no profile context and no bank row) are scored by the global head with the population-average
user context, and the result says `fallback=True`. Global variants score known users with their own profile
context (`fallback=False`): the head is global, the user features are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttp_ray.errors import TTPValidationError
from ttp_ray.reward.features import FeatureRequest, Featurizer

__all__ = ["ScoreResult", "RewardScorer", "resolve_variant_dir"]

VARIANTS = ("global-det", "global-prob", "user-det", "user-prob")


@dataclass
class ScoreResult:
    """μ (and σ for probabilistic variants) per candidate, in input order."""

    mu: np.ndarray  # (n,) float64
    sigma: np.ndarray | None  # (n,) float64, None for Det variants
    fallback: bool  # True: unknown user, scored by the global head
    method: str  # the variant name, e.g. "user-prob"


def resolve_variant_dir(rm_dir: str | Path, variant: str) -> Path:
    """`rm_dir` is `{run_dir}/rm/{dataset}` (holding variant folders) or a variant folder itself.

    Returns the variant's stable name (a symlink to its current version, see `ttp_ray.training.checkpoint`), not
    the version behind it: one file opened through it is always from one complete version, and
    `load_rm_checkpoint` pins a single version for all of its files.
    """
    rm_dir = Path(rm_dir)
    if (rm_dir / "manifest.json").is_file():
        return rm_dir
    if variant not in VARIANTS:
        raise TTPValidationError(f"`variant` must be one of {list(VARIANTS)}, got {variant!r}",
                                 parameter="variant", value=variant)
    d = rm_dir / variant
    if not (d / "manifest.json").is_file():
        have = sorted(p.name for p in rm_dir.iterdir()  # skip hidden names: the versions behind the variants
                      if not p.name.startswith(".") and (p / "manifest.json").is_file()) if rm_dir.is_dir() else []
        raise TTPValidationError(f"no {variant!r} checkpoint under {rm_dir} (found {have})",
                                 parameter="rm_dir", value=str(rm_dir))
    return d


class RewardScorer:
    """A loaded variant: featurizer (backbone + cached query/user parts) and head (+ per-user bank)."""

    def __init__(self, ckpt, featurizer: Featurizer) -> None:  # noqa: ANN001 - RMCheckpoint (avoid an import cycle)
        self.ckpt = ckpt
        self.featurizer = featurizer
        self.method: str = ckpt.variant
        self.probabilistic: bool = ckpt.head.probabilistic
        self._row = {u: i for i, u in enumerate(ckpt.user_index)} if ckpt.model is not None else {}
        users = set(ckpt.contexts)
        self.known_users: frozenset[str] = frozenset(users | set(self._row))

    @classmethod
    def from_checkpoint(
        cls, rm_dir: str | Path, variant: str = "user-prob", device: str = "cpu", *, featurizer: Featurizer | None = None
    ) -> RewardScorer:
        """Load `variant` from `rm_dir` (see `resolve_variant_dir`); `featurizer` shares a loaded backbone."""
        from ttp_ray.training.checkpoint import load_rm_checkpoint

        ckpt = load_rm_checkpoint(resolve_variant_dir(rm_dir, variant))
        if featurizer is None:
            featurizer = Featurizer.from_config(ckpt.feature_cfg, device=device)
            if ckpt.backbone_state:
                tuned = ckpt.manifest["training"].get("global_stage", {})
                if tuned.get("backbone_mode") == "lora":
                    featurizer.backbone.apply_lora(tuned["lora_r"], tuned["lora_alpha"], 0.0,
                                                   tuned.get("lora_target_modules"))
                featurizer.backbone.load_trainable_state_dict(ckpt.backbone_state)
                featurizer.backbone.freeze()
        return cls(ckpt, featurizer)

    # ---- scoring --------------------------------------------------------------------------------------------
    def _request(self, user_id: str, query: str, candidates: Sequence[str], i: int) -> tuple[FeatureRequest, bool]:
        if not isinstance(user_id, str):
            raise TTPValidationError(f"requests[{i}].user_id must be a str, got {type(user_id).__name__}",
                                     parameter="user_id", value=user_id)
        if not isinstance(query, str):
            raise TTPValidationError(f"requests[{i}].query must be a str, got {type(query).__name__}",
                                     parameter="query")
        if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates):
            raise TTPValidationError(f"requests[{i}].candidates must be a list of str", parameter="candidates")
        ctx = self.ckpt.contexts.get(user_id)
        return FeatureRequest(ctx or self.ckpt.population, query, list(candidates)), user_id not in self.known_users

    @torch.no_grad()
    def score_features(self, x: torch.Tensor, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(μ, σ or None) for precomputed feature rows of `user_ids` (unknown users -> global head)."""
        if self.ckpt.model is not None:
            idx = torch.tensor([self._row.get(u, -1) for u in user_ids], dtype=torch.long)
            out = self.ckpt.model(x, idx)
        else:
            out = self.ckpt.head(x)
        mu = out.mu.double().numpy()
        sigma = out.var.double().sqrt().numpy() if out.var is not None else None
        return mu, sigma

    @property
    def pool_aware(self) -> bool:
        """True when μ reads pool-aware columns (`FeatureConfig.pool_blocks`)."""
        return self.ckpt.head.n_linear > 0

    @torch.no_grad()
    def pool_slope(self, x: torch.Tensor, user_ids: Sequence[str]) -> np.ndarray | None:
        """(n,) dμ/d(pool column) per row, None for per-candidate variants.

        μ is affine in the pool column for every variant (the head routes it around the trunk; the user bank is
        affine in its inputs), so two evaluations give the exact slope, and μ on any subset S of the pool is
        μ + slope · (consensus_S − consensus_pool) — what subset Best-of-N evaluation needs.
        """
        if not self.pool_aware:
            return None
        if self.ckpt.head.n_linear != 1:
            raise TTPValidationError("pool_slope supports one pool block", parameter="pool_blocks",
                                     value=self.ckpt.head.n_linear)
        lo, hi = x.clone(), x.clone()
        lo[:, -1], hi[:, -1] = 0.0, 1.0
        return self.score_features(hi, user_ids)[0] - self.score_features(lo, user_ids)[0]

    def score_batch(self, requests: Sequence[tuple[str, str, Sequence[str]]]) -> list[ScoreResult]:
        """Score many (user_id, query, candidates) requests with one backbone pass and one head pass."""
        reqs, fallbacks = [], []
        for i, (user_id, query, cands) in enumerate(requests):
            r, fb = self._request(user_id, query, cands, i)
            reqs.append(r)
            fallbacks.append(fb)
        x = self.featurizer.features(reqs)
        user_rows = [u for (u, _, c) in requests for _ in range(len(c))]
        mu, sigma = self.score_features(x, user_rows)
        out, start = [], 0
        for r, fb in zip(reqs, fallbacks, strict=True):
            end = start + len(r.candidates)
            out.append(ScoreResult(mu[start:end], sigma[start:end] if sigma is not None else None, fb, self.method))
            start = end
        return out

    def score(self, user_id: str, query: str, candidates: Sequence[str]) -> ScoreResult:
        """Score one query's candidates for one user."""
        return self.score_batch([(user_id, query, candidates)])[0]
