"""Per-user reward models for thousands of users as ONE parameter tensor.

User u's head is the global head plus a linear correction of its raw output (μ and the variance logit):

    raw_u(x) = raw_global(x) + a_u ⊙ (raw_global(x) − m) + V_u · z(x) + b_u     W_u = [V_u | b_u | a_u] ∈ R^{n_out × (k+2)}

z is the global head's last hidden layer (k = hidden_dim) or the standardised features (k = feature width);
the gain a_u lets a user damp (a_u → −1) or amplify the global ranking, which an additive correction alone
cannot undo when the global head is non-linear. m (a buffer: the global head's output at the mean feature
vector, a data-free stand-in for its mean output) centres the gain's input so a_u and b_u are not collinear
(an uncentred gain makes Adam crawl). The bank is W ∈ R^{U × n_out(k+2)}. W starts at 0 (= the global model) and
a Gaussian prior pulls it back there, so a user with little data keeps the global head. Rows are gathered with a sparse embedding lookup: a mini-batch that mixes many users updates
exactly the rows of the users in it (`LazyAdam`: Adam moments and step counts per row, only the batch's rows
move), and users never share a row, so a user slice of the bank trains on one worker with no gradient
all-reduce.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ttp_ray.reward.heads import HeadOutput, RewardHead, raw_to_mu_var

__all__ = ["LazyAdam", "PersonalizedHead", "UserBank"]


class UserBank(nn.Module):
    """U rows of per-user corrections; `gather` is a sparse lookup (only the batch's rows get gradients)."""

    def __init__(self, n_users: int, in_dim: int, n_out: int, *, sparse: bool = False) -> None:
        super().__init__()
        if n_users < 1:
            raise ValueError(f"`n_users` must be >= 1, got {n_users}")
        self.n_users, self.in_dim, self.n_out, self.sparse = n_users, in_dim, n_out, sparse
        self.row_width = in_dim + 2  # V (in_dim), bias, gain
        # V reads z / √k: an Adam step of size lr on every entry then moves μ by O(lr) whatever the width k
        # (with raw z it would move by O(lr·√k) and a 1,000-wide feature input would blow up on step one).
        self.v_scale = 1.0 / math.sqrt(max(in_dim, 1))
        self.weight = nn.Parameter(torch.zeros(n_users, n_out * self.row_width))
        self.register_buffer("gain_center", torch.zeros(n_out))

    def gather(self, user_idx: torch.Tensor) -> torch.Tensor:
        """(B, n_out, in_dim + 2) rows of the users in the batch."""
        rows = F.embedding(user_idx, self.weight, sparse=self.sparse)
        return rows.view(-1, self.n_out, self.row_width)

    def inputs(self, z: torch.Tensor, raw_global: torch.Tensor) -> torch.Tensor:
        """(B, n_out, k+2) what each row entry multiplies: [z/√k, 1, raw_global − m] per output."""
        b = z.shape[0]
        zs = (z * self.v_scale).unsqueeze(1).expand(b, self.n_out, self.in_dim)
        ones = z.new_ones(b, self.n_out, 1)
        return torch.cat([zs, ones, (raw_global - self.gain_center).unsqueeze(-1)], dim=-1)

    def apply(self, z: torch.Tensor, raw_global: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B, n_out) personalised raw output raw_global + a_u ⊙ (raw_global − m) + V_u z + b_u."""
        # one multiply-and-sum over the row: no slicing of `rows` (slice backwards zero-fill full tensors)
        return raw_global + (rows * self.inputs(z, raw_global)).sum(-1)


class PersonalizedHead(nn.Module):
    """A frozen global `RewardHead` + a `UserBank`. `user_idx < 0` (unknown user) means the global head alone."""

    def __init__(self, head: RewardHead, n_users: int, user_input: str = "hidden", *, sparse: bool = False) -> None:
        super().__init__()
        if user_input not in ("hidden", "features"):
            raise ValueError(f"`user_input` must be 'hidden' or 'features', got {user_input!r}")
        self.head = head
        self.user_input = user_input
        in_dim = head.hidden_dim if user_input == "hidden" else head.in_dim
        self.bank = UserBank(n_users, in_dim, head.n_out, sparse=sparse)
        for p in self.head.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            was_training = head.training
            head.eval()
            self.bank.gain_center.copy_(head.raw(head.x_mean.unsqueeze(0))[0])
            head.train(was_training)

    @property
    def cfg(self):  # noqa: ANN201 - HeadConfig
        return self.head.cfg

    def base(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, raw_global): the frozen parts, computed once per row when fitting the bank."""
        h = self.head.hidden(x)
        z = h if self.user_input == "hidden" else self.head.normalize(x)
        return z, self.head.head_raw(h, self.head.pool_term(x))

    def from_rows(self, z: torch.Tensor, raw_global: torch.Tensor, rows: torch.Tensor) -> HeadOutput:
        """Head output from precomputed parts and per-sample bank rows (B, n_out·(k+2))."""
        raw = self.bank.apply(z, raw_global, rows.view(-1, self.bank.n_out, self.bank.row_width))
        return raw_to_mu_var(raw, self.head.cfg)

    def from_base(self, z: torch.Tensor, raw_global: torch.Tensor, user_idx: torch.Tensor) -> HeadOutput:
        """Head output from precomputed parts; `user_idx < 0` rows get the global head."""
        known = user_idx >= 0
        rows = self.bank.gather(user_idx.clamp_min(0))
        if not bool(known.all()):
            rows = rows * known.view(-1, 1, 1).to(rows.dtype)
        return raw_to_mu_var(self.bank.apply(z, raw_global, rows), self.head.cfg)

    def forward(self, x: torch.Tensor, user_idx: torch.Tensor) -> HeadOutput:
        z, raw_global = self.base(x)
        return self.from_base(z, raw_global, user_idx)


class LazyAdam:
    """Adam over the rows of a (U, W) bank that updates only the rows it is told were in the batch.

    Unlike `torch.optim.SparseAdam` it keeps a step count per row, so bias correction is right for a user that
    appears in few batches, and it works from a dense gradient (a plain `index` backward, much faster than
    coalescing a sparse gradient with one entry per sample). Rows not passed to `step` are left bit-for-bit
    unchanged, moments included.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = torch.zeros(param.shape[0], dtype=torch.float64)

    @torch.no_grad()
    def step(self, rows: torch.Tensor) -> None:
        """Update `rows` (unique row indices) from `param.grad`, then zero their gradient."""
        grad = self.param.grad
        if grad is None or len(rows) == 0:
            return
        b1, b2 = self.betas
        g = grad[rows]
        t = self.steps[rows] + 1
        self.steps[rows] = t
        m = self.exp_avg[rows].mul_(b1).add_(g, alpha=1 - b1)
        v = self.exp_avg_sq[rows].mul_(b2).addcmul_(g, g, value=1 - b2)
        self.exp_avg[rows], self.exp_avg_sq[rows] = m, v
        bc1 = (1 - b1**t).to(g.dtype).unsqueeze(1)
        bc2 = (1 - b2**t).to(g.dtype).unsqueeze(1)
        self.param[rows] -= self.lr * (m / bc1) / ((v / bc2).sqrt() + self.eps)
        grad[rows] = 0
