"""Det and Prob reward heads on feature vectors.

    x ─ standardise ─┬ x[:, :D−L] ─ trunk (num_layers × [Linear, GELU, Dropout]) ─ z ─ Linear ─ raw (B, 1|2)
                     └ x[:, D−L:] (the L pool-aware columns) ─ Linear (no bias) ──────────────── + raw[:, 0]
                                                                                   μ = raw[:, 0]
                                                                                   σ² = floor + softplus(raw[:, 1])
                                                                                      | floor + exp(raw[:, 1])

The L = `linear_inputs` pool-aware columns (`ttp_ray.reward.pool`) bypass the trunk and only move μ, linearly:
μ is then affine in them, which is what lets Best-of-N over any N-subset be evaluated exactly from two numbers
per candidate (`ttp_ray.reward.scorer.pool_slope`). σ² never reads them.

Selection always uses μ; σ² exists to weight the training signal (Gaussian NLL). The standardisation statistics
are buffers, so they travel with the weights in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ttp_ray.reward.config import HeadConfig

__all__ = ["HeadOutput", "RewardHead", "raw_to_mu_var", "var_to_raw"]

_MAX_RAW_EXP = 20.0  # exp(20) ≈ 5e8: far above any sensible variance of a score in [0, 1]


@dataclass
class HeadOutput:
    mu: torch.Tensor  # (B,)
    var: torch.Tensor | None  # (B,) for Prob heads


def raw_to_mu_var(raw: torch.Tensor, cfg: HeadConfig) -> HeadOutput:
    """Map the head's raw (B, 1|2) output to μ and the floored variance."""
    mu = raw[:, 0]
    if not cfg.probabilistic:
        return HeadOutput(mu, None)
    s = raw[:, 1]
    pos = F.softplus(s) if cfg.variance == "softplus" else torch.exp(s.clamp(max=_MAX_RAW_EXP))
    return HeadOutput(mu, cfg.var_floor + pos)


def var_to_raw(var: float, cfg: HeadConfig) -> float:
    """Inverse of the variance map (used to start σ² at the data's residual variance)."""
    pos = max(var - cfg.var_floor, 1e-12)
    if cfg.variance == "exp":
        return float(torch.log(torch.tensor(pos)))
    return float(pos + torch.log(-torch.expm1(-torch.tensor(pos))))  # softplus⁻¹


class RewardHead(nn.Module):
    """μ (and σ²) from features. `hidden(x)` is what the per-user bank reads when `user_input="hidden"`."""

    def __init__(self, in_dim: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.n_linear = cfg.linear_inputs
        if self.n_linear > in_dim:
            raise ValueError(f"linear_inputs={self.n_linear} must not exceed the feature width {in_dim}")
        self.register_buffer("x_mean", torch.zeros(in_dim))
        self.register_buffer("x_std", torch.ones(in_dim))
        layers: list[nn.Module] = []
        d = in_dim - self.n_linear
        for _ in range(cfg.num_layers):
            layers += [nn.Linear(d, cfg.hidden_dim), nn.GELU()]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            d = cfg.hidden_dim
        self.trunk = nn.Sequential(*layers)
        self.hidden_dim = d
        self.n_out = 2 if cfg.probabilistic else 1
        self.out = nn.Linear(d, self.n_out)
        self.pool = nn.Linear(self.n_linear, 1, bias=False) if self.n_linear else None
        if self.pool is not None:
            nn.init.zeros_(self.pool.weight)  # starts flat like `out`: the data decides the pool term's weight

    @property
    def probabilistic(self) -> bool:
        return self.cfg.probabilistic

    @torch.no_grad()
    def fit_normalizer(self, x: torch.Tensor) -> None:
        """Standardise inputs with these statistics (constant columns keep std 1)."""
        self.x_mean.copy_(x.mean(0))
        std = x.std(0, unbiased=False)
        self.x_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    @torch.no_grad()
    def init_output(self, mu0: float, var0: float | None = None) -> None:
        """Start every candidate at the data's mean (and variance): the first steps then learn structure.

        The output weights are zeroed too: a random output layer gives μ a per-candidate spread larger than the
        golden scores' own (sd 0.19 vs 0.12 on the commit data), and with ~20 steps on a small pool the Gaussian
        NLL then inflates σ² to cover it instead of fixing μ, so Prob heads ranked at random (measured here).
        """
        self.out.weight.zero_()
        if self.pool is not None:
            self.pool.weight.zero_()
        self.out.bias[0] = mu0
        if self.probabilistic and var0 is not None:
            self.out.bias[1] = var_to_raw(var0, self.cfg)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(B, hidden_dim) trunk output of the per-candidate columns (themselves, standardised, when linear)."""
        return self.trunk(self.normalize(x)[:, : self.in_dim - self.n_linear])

    def pool_term(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B,) the pool-aware columns' linear contribution to μ (None without pool columns)."""
        if self.pool is None:
            return None
        return self.pool(self.normalize(x)[:, self.in_dim - self.n_linear :]).squeeze(-1)

    def head_raw(self, h: torch.Tensor, pool_term: torch.Tensor | None) -> torch.Tensor:
        """raw output from the trunk output `h` and the pool term."""
        raw = self.out(h)
        if pool_term is None:
            return raw
        return torch.cat([raw[:, :1] + pool_term.unsqueeze(-1), raw[:, 1:]], dim=1)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_raw(self.hidden(x), self.pool_term(x))

    def forward(self, x: torch.Tensor) -> HeadOutput:
        return raw_to_mu_var(self.raw(x), self.cfg)
