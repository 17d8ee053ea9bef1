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
