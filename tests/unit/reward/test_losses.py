"""Losses and their gradients on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ttp_ray.reward.losses import beta_nll, gaussian_nll, head_loss, mse


def test_mse_value_and_gradient() -> None:
    mu = torch.tensor([0.5, 0.2], requires_grad=True)
    g = torch.tensor([0.1, 0.2])
    loss = mse(mu, g)
    assert torch.allclose(loss, torch.tensor([0.16, 0.0]))
    loss.sum().backward()
    assert torch.allclose(mu.grad, torch.tensor([0.8, 0.0]))  # 2 (μ − g)


def test_gaussian_nll_value_and_gradients() -> None:
    mu = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    var = torch.tensor([0.04], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0.1], dtype=torch.float64)
    loss = gaussian_nll(mu, var, g)
    # ½ log 0.04 + 0.16 / (2 · 0.04) = ½ log 0.04 + 2
    assert loss.item() == pytest.approx(0.5 * math.log(0.04) + 2.0, abs=1e-12)
    loss.sum().backward()
    assert mu.grad.item() == pytest.approx(0.4 / 0.04, abs=1e-9)  # (μ − g)/σ² = 10: gradient buffering
    assert var.grad.item() == pytest.approx(0.5 / 0.04 - 0.16 / (2 * 0.04**2), abs=1e-9)  # 1/(2σ²) − r²/(2σ⁴)


def test_gaussian_nll_full_adds_constant() -> None:
    mu, var, g = torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0])
    assert gaussian_nll(mu, var, g, full=True).item() == pytest.approx(0.5 * math.log(2 * math.pi))


def test_nll_gradient_scales_inversely_with_variance() -> None:
    """Lemma 5.1: the same residual pushes μ 100x harder when σ² is 100x smaller."""
    grads = []
    for v in (1e-2, 1e-4):
        mu = torch.tensor([0.03], requires_grad=True)
        gaussian_nll(mu, torch.tensor([v]), torch.tensor([0.02])).sum().backward()
        grads.append(mu.grad.item())
    assert grads[1] / grads[0] == pytest.approx(100.0, rel=1e-4)


def test_beta_nll_weights_by_stopgrad_variance() -> None:
    mu = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    var = torch.tensor([0.04], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0.1], dtype=torch.float64)
    loss = beta_nll(mu, var, g, beta=0.5)
    nll = 0.5 * math.log(0.04) + 2.0
    assert loss.item() == pytest.approx(nll * 0.2, abs=1e-12)  # σ^(2β) = 0.04^0.5 = 0.2
    loss.sum().backward()
    assert mu.grad.item() == pytest.approx(0.2 * 10.0, abs=1e-9)  # weight is a constant for autograd
    assert var.grad.item() == pytest.approx(0.2 * (0.5 / 0.04 - 0.16 / (2 * 0.04**2)), abs=1e-9)


def test_beta_one_gives_mse_like_mean_gradient() -> None:
    mu = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    beta_nll(mu, torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64), 1.0).backward()
    assert mu.grad.item() == pytest.approx(0.4, abs=1e-12)  # σ²·(μ−g)/σ² = μ − g: no variance rescaling


def test_head_loss_dispatches_on_variance() -> None:
    mu, g = torch.tensor([0.3]), torch.tensor([0.1])
    assert torch.equal(head_loss(mu, None, g), mse(mu, g))
    assert torch.equal(head_loss(mu, torch.tensor([0.5]), g), gaussian_nll(mu, torch.tensor([0.5]), g))


# ---- within-query objective ----------------------------------------------------------------------------------
from ttp_ray.reward.losses import objective_loss, query_offsets, within_query_loss  # noqa: E402


def _profiled_reference(mu: torch.Tensor, var: torch.Tensor | None, g: torch.Tensor, group: torch.Tensor,
                        beta: float) -> torch.Tensor:
    """The profiled loss with α*(μ, σ²) differentiable (no detach), written out per group."""
    total = torch.zeros((), dtype=mu.dtype)
    for q in group.unique():
        m = group == q
        n = int(m.sum())
        if n < 2:
            continue
        w = torch.ones_like(g[m]) if var is None else var[m].pow(beta - 1)
        alpha = (w * (g[m] - mu[m])).sum() / w.sum()
        r2 = (g[m] - mu[m] - alpha).pow(2) * n / (n - 1)
        if var is None:
            total = total + r2.sum()
        else:
            nll = 0.5 * torch.log(var[m]) + r2 / (2 * var[m])
            total = total + (nll * var[m].detach().pow(beta)).sum()
    return total


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("prob", [False, True])
def test_within_query_loss_equals_the_profiled_loss_value_and_gradient(prob: bool, beta: float) -> None:
    """Detaching α* gives the exact gradient of the profiled loss (envelope theorem), value and gradient."""
    gen = torch.Generator().manual_seed(0)
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # group 3 is a single row
    mu = torch.rand(10, generator=gen, dtype=torch.float64).requires_grad_()
    var = (0.01 + torch.rand(10, generator=gen, dtype=torch.float64)).requires_grad_() if prob else None
    g = torch.rand(10, generator=gen, dtype=torch.float64)
    ours = within_query_loss(mu, var, g, group, beta)
    ref = _profiled_reference(mu, var, g, group, beta)
    assert ours.sum().item() == pytest.approx(ref.item(), rel=1e-12)
    assert ours[9].item() == 0.0  # a query of one candidate says nothing about differences
    params = [mu] + ([var] if prob else [])
    got = torch.autograd.grad(ours.sum(), params)
    want = torch.autograd.grad(ref, params)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_within_query_loss_ignores_each_querys_offset() -> None:
    """Adding a constant to one query's μ (its level) changes nothing; the pointwise loss does change."""
    group = torch.tensor([0, 0, 0, 1, 1])
    mu = torch.tensor([0.1, 0.3, 0.2, 0.5, 0.4], dtype=torch.float64)
    var = torch.tensor([0.02, 0.05, 0.03, 0.04, 0.01], dtype=torch.float64)
    g = torch.tensor([0.0, 0.4, 0.1, 0.9, 0.6], dtype=torch.float64)
    shifted = mu + torch.tensor([0.3, 0.3, 0.3, -1.0, -1.0], dtype=torch.float64)
    for v in (None, var):
        assert torch.allclose(within_query_loss(mu, v, g, group), within_query_loss(shifted, v, g, group))
        assert not torch.allclose(head_loss(mu, v, g), head_loss(shifted, v, g))
    assert torch.allclose(query_offsets(mu, None, g, group)[:3], (g[:3] - mu[:3]).mean().expand(3))


def test_objective_loss_dispatches_and_names_what_is_missing() -> None:
    mu, g = torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.5])
    assert torch.equal(objective_loss(mu, None, g, None), mse(mu, g))
    with pytest.raises(ValueError, match="needs the query of every row"):
        objective_loss(mu, None, g, None, objective="within_query")
    with pytest.raises(ValueError, match="objective must be one of"):
        objective_loss(mu, None, g, torch.tensor([0, 0]), objective="listwise")
