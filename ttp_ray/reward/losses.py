"""Per-sample losses of the Det and Prob reward heads (no reduction: callers weight and average).

Gaussian NLL is the paper's Prob loss; its gradient in μ is (μ − g)/σ² (paper-notes §6, Lemma 5.1): a user whose
golden scores barely vary learns a small σ², which scales that user's μ gradient up instead of letting the prior
toward the global head swamp it. β-NLL (Seitzer et al., ICLR 2022) multiplies the NLL by stop-grad(σ²)^β, which
interpolates between NLL (β=0) and an MSE-like gradient for μ (β=1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["beta_nll", "gaussian_nll", "head_loss", "mse"]



def mse(mu: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
    """(μ − g)² per sample."""
    return F.mse_loss(mu, golden, reduction="none")


def gaussian_nll(mu: torch.Tensor, var: torch.Tensor, golden: torch.Tensor, *, full: bool = False) -> torch.Tensor:
    """½·log σ² + (g − μ)²/(2σ²) per sample (+ ½·log 2π when `full`).

    `var` must already be positive and floored by the head; torch's own clamp (eps=1e-6) never triggers then, so
    the value and gradient are exactly the formula's.
    """
    return F.gaussian_nll_loss(mu, golden, var, full=full, eps=1e-12, reduction="none")


def beta_nll(mu: torch.Tensor, var: torch.Tensor, golden: torch.Tensor, beta: float) -> torch.Tensor:
    """β-NLL: stop-grad(σ²)^β · NLL per sample; β = 0 is plain Gaussian NLL."""
    nll = gaussian_nll(mu, var, golden)
    if beta == 0:
        return nll
    return nll * var.detach().pow(beta)


def head_loss(mu: torch.Tensor, var: torch.Tensor | None, golden: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """The training loss of a head's output: MSE for Det heads (`var is None`), (β-)NLL for Prob heads."""
    if var is None:
        return mse(mu, golden)
    return beta_nll(mu, var, golden, beta)
