"""Heads (variance floor, parameterisations) and the per-user bank (sparse updates, fallback)."""

from __future__ import annotations

import pytest
import torch

from ttp_ray.reward.bank import LazyAdam, PersonalizedHead, UserBank
from ttp_ray.reward.config import HeadConfig
from ttp_ray.reward.heads import RewardHead, raw_to_mu_var, var_to_raw
from ttp_ray.reward.losses import gaussian_nll


@pytest.mark.parametrize("variance", ["softplus", "exp"])
def test_variance_floor_is_respected_for_extreme_raw_outputs(variance: str) -> None:
    cfg = HeadConfig(variance=variance, var_floor=1e-3)
    raw = torch.tensor([[0.0, -1e4], [0.0, -50.0], [0.0, 0.0], [0.0, 50.0]])
    out = raw_to_mu_var(raw, cfg)
    assert (out.var >= 1e-3).all()
    assert out.var[0].item() == pytest.approx(1e-3)  # the floor, not 0
    assert torch.isfinite(out.var).all()


@pytest.mark.parametrize("variance", ["softplus", "exp"])
def test_var_to_raw_inverts_the_map(variance: str) -> None:
    cfg = HeadConfig(variance=variance, var_floor=1e-4)
    for v in (2e-4, 0.01, 0.3):
        raw = torch.tensor([[0.0, var_to_raw(v, cfg)]])
        assert raw_to_mu_var(raw, cfg).var.item() == pytest.approx(v, rel=1e-5)


def test_det_head_has_no_variance_and_init_output_sets_mean() -> None:
    head = RewardHead(5, HeadConfig(probabilistic=False, num_layers=0))
    with torch.no_grad():
        head.out.weight.zero_()
    head.init_output(0.25)
    out = head(torch.randn(3, 5))
    assert out.var is None
    assert torch.allclose(out.mu, torch.full((3,), 0.25))


def test_normalizer_standardises_and_keeps_constant_columns() -> None:
    head = RewardHead(2, HeadConfig(num_layers=0))
    x = torch.tensor([[1.0, 7.0], [3.0, 7.0]])
    head.fit_normalizer(x)
    z = head.normalize(x)
    assert torch.allclose(z[:, 0], torch.tensor([-1.0, 1.0]))
    assert torch.allclose(z[:, 1], torch.zeros(2))  # constant column: std kept at 1, no division by 0


def _model(n_users: int = 5, in_dim: int = 3) -> PersonalizedHead:
    torch.manual_seed(0)
    head = RewardHead(in_dim, HeadConfig(num_layers=1, hidden_dim=4))
    return PersonalizedHead(head, n_users, "features")


def test_bank_starts_at_the_global_head_and_unknown_users_use_it() -> None:
    model = _model()
    x = torch.randn(4, 3)
    glob = model.head(x)
    out = model(x, torch.tensor([0, 3, -1, 4]))
    assert torch.allclose(out.mu, glob.mu) and torch.allclose(out.var, glob.var)
    with torch.no_grad():
        model.bank.weight.normal_()
    out = model(x, torch.tensor([0, 3, -1, 4]))
    assert torch.allclose(out.mu[2], glob.mu[2]) and torch.allclose(out.var[2], glob.var[2])  # unknown: global
    assert not torch.allclose(out.mu[[0, 1, 3]], glob.mu[[0, 1, 3]])


def test_update_touches_only_users_in_the_batch() -> None:
    model = _model(n_users=6)
    opt = LazyAdam(model.bank.weight, lr=0.1)
    x, g = torch.randn(8, 3), torch.rand(8)
    for users in ([1, 1, 4, 4, 4, 1, 4, 1], [4, 4, 4, 4, 4, 4, 4, 4]):
        users = torch.tensor(users)
        before = model.bank.weight.detach().clone()
        moments = opt.exp_avg.clone(), opt.exp_avg_sq.clone()
        out = model(x, users)
        gaussian_nll(out.mu, out.var, g).mean().backward()
        opt.step(torch.unique(users))
        changed = (model.bank.weight.detach() != before).any(dim=1)
        assert changed.tolist() == [u in users.tolist() for u in range(6)]
        # momentum must not leak into other rows either (unlike dense Adam on a zero gradient)
        for old, new in zip(moments, (opt.exp_avg, opt.exp_avg_sq), strict=True):
            same = (old == new).all(dim=1)
            assert same.tolist() == [u not in users.tolist() for u in range(6)]
    assert opt.steps.tolist() == [0, 1, 0, 0, 2, 0]  # per-row step counts: per-user bias correction
    assert all(p.grad is None for p in model.head.parameters())  # the global head is frozen


def test_lazy_adam_matches_torch_adam_on_the_rows_it_updates() -> None:
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(3, 4))
    w2 = torch.nn.Parameter(w1.detach().clone())
    lazy, ref = LazyAdam(w1, lr=0.05), torch.optim.Adam([w2], lr=0.05)
    for _ in range(3):
        t = torch.randn(3, 4)
        for w in (w1, w2):
            ((w - t) ** 2).sum().backward()
        lazy.step(torch.arange(3))
        ref.step()
        ref.zero_grad()
    assert torch.allclose(w1, w2, atol=1e-6)


def test_bank_gain_can_switch_the_global_ranking_off() -> None:
    model = _model(n_users=2)
    x = torch.randn(16, 3)
    with torch.no_grad():
        w = model.bank.weight.view(2, 2, model.bank.row_width)
        w[1, 0, -1] = -1.0  # user 1: μ gain a = −1
    mu = model(x, torch.tensor([1] * 16)).mu
    assert torch.allclose(mu, torch.full_like(mu, model.bank.gain_center[0].item()), atol=1e-6)


def test_bank_rejects_empty() -> None:
    with pytest.raises(ValueError, match="n_users"):
        UserBank(0, 3, 2)
