"""Per-sample losses of the Det and Prob reward heads (no reduction: callers weight and average).

Gaussian NLL is the paper's Prob loss; its gradient in μ is (μ − g)/σ² (paper-notes §6, Lemma 5.1): a user whose
golden scores barely vary learns a small σ², which scales that user's μ gradient up instead of letting the prior
toward the global head swamp it. β-NLL (Seitzer et al., ICLR 2022) multiplies the NLL by stop-grad(σ²)^β, which
interpolates between NLL (β=0) and an MSE-like gradient for μ (β=1).

Selection only ever compares candidates of one query, so `objective="within_query"` fits what selection uses:
each query's golden scores share an offset the RM cannot know and selection does not need (how hard the query
is). `within_query_loss` gives every query a free offset α_q, profiled out at its optimum, so μ is fit to the
candidates' differences inside their query and σ² to the spread around them. Prob stays Prob: the same Gaussian
NLL, on g − (μ + α_q). On the commit data the pointwise fit puts 2.7× more weight on the user-history feature
than on consensus, the within-query fit 8.7× (the pointwise weights also explain which queries are easy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["OBJECTIVES", "beta_nll", "gaussian_nll", "head_loss", "mse", "objective_loss", "query_offsets", "within_query_loss"]

OBJECTIVES = ("pointwise", "within_query")



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


def query_offsets(mu: torch.Tensor, var: torch.Tensor | None, golden: torch.Tensor, group: torch.Tensor,
                  beta: float = 0.0) -> torch.Tensor:
    """(B,) the per-query offset α that minimises each group's loss, broadcast to its rows (no gradient).

    The (β-)NLL's data term is Σ_i w_i (g_i − μ_i − α)² with w = σ^(2β−2) (w = 1 for Det heads), so
    α* = Σ w_i (g_i − μ_i) / Σ w_i. It is detached: at the optimum ∂loss/∂α = 0, so the gradient of the
    profiled loss in μ and σ² is the partial gradient at α* (envelope theorem) — no backward through α.
    """
    with torch.no_grad():
        w = torch.ones_like(golden) if var is None else var.pow(beta - 1.0)
        n_groups = int(group.max()) + 1 if len(group) else 0
        num = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group, (w * (golden - mu)).double())
        den = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group, w.double())
        return (num / den.clamp_min(1e-30)).to(mu.dtype)[group]


def within_query_loss(mu: torch.Tensor, var: torch.Tensor | None, golden: torch.Tensor, group: torch.Tensor,
                      beta: float = 0.0) -> torch.Tensor:
    """Per-sample loss with each group's (query's) offset profiled out; 0 for a group of one row.

    `group` (B,) int64 codes 0..G−1: rows of one query that sit in this batch. A query split across batches or
    workers gets one offset per piece, which is still a valid within-query contrast. The squared residual is
    scaled by n/(n−1) (n = the group's rows), the usual correction for a mean fit from the same rows, so σ²
    estimates the spread of a candidate around its query's level without the shrinkage of a fitted offset.
    """
    counts = torch.bincount(group)[group].to(mu.dtype)
    keep = counts > 1
    adj = mu + query_offsets(mu, var, golden, group, beta)
    scale = torch.where(keep, counts / (counts - 1).clamp_min(1), torch.zeros_like(counts))
    if var is None:
        return scale * mse(adj, golden)
    nll = 0.5 * torch.log(var) + scale * (golden - adj).pow(2) / (2 * var)
    nll = torch.where(keep, nll, torch.zeros_like(nll))
    return nll if beta == 0 else nll * var.detach().pow(beta)


def objective_loss(mu: torch.Tensor, var: torch.Tensor | None, golden: torch.Tensor, group: torch.Tensor | None,
                   beta: float = 0.0, objective: str = "pointwise") -> torch.Tensor:
    """`head_loss` (pointwise) or `within_query_loss` (needs `group`), per sample."""
    if objective == "pointwise":
        return head_loss(mu, var, golden, beta)
    if objective != "within_query":
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if group is None:
        raise ValueError("objective='within_query' needs the query of every row (`group`)")
    return within_query_loss(mu, var, golden, group, beta)
