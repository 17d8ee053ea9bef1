"""Per-user reward models for thousands of users as ONE parameter tensor.

User u's head is the global head plus a linear correction of its raw output (μ and the variance logit):

    raw_u(x) = raw_global(x) + a_u ⊙ (raw_global(x) − m) + V_u · z(x) + b_u     W_u = [V_u | b_u | a_u] ∈ R^{n_out × (k+2)}

z is the global head's last hidden layer (k = hidden_dim) or the standardised features (k = feature width);
the gain a_u lets a user damp (a_u → −1) or amplify the global ranking, which an additive correction alone
cannot undo when the global head is non-linear. m (a buffer: the global head's output at the mean feature
vector, a data-free stand-in for its mean output) centres the gain's input so a_u and b_u are not collinear
(an uncentred gain makes Adam crawl). The bank is W ∈ R^{U × n_out(k+2)}. W starts at 0 (= the global model) and
a Gaussian prior pulls it back there, so a user with little data keeps the global head. Rows are gathered with a sparse embedding lookup: a mini-batch that mixes many users updates
exactly the rows of the users in it (with `torch.optim.SparseAdam`), and users never share a row, so a user
slice of the bank trains on one worker with no gradient all-reduce.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ttp_ray.reward.heads import HeadOutput, RewardHead, raw_to_mu_var

__all__ = ["PersonalizedHead", "UserBank"]


class UserBank(nn.Module):
    """U rows of per-user corrections; `gather` is a sparse lookup (only the batch's rows get gradients)."""

    def __init__(self, n_users: int, in_dim: int, n_out: int, *, sparse: bool = True) -> None:
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

    def apply(self, z: torch.Tensor, raw_global: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B, n_out) personalised raw output raw_global + a_u ⊙ (raw_global − m) + V_u z + b_u."""
        k = self.in_dim
        gain = rows[:, :, k + 1] * (raw_global - self.gain_center)
        return raw_global + gain + torch.einsum("boi,bi->bo", rows[:, :, :k], z * self.v_scale) + rows[:, :, k]


class PersonalizedHead(nn.Module):
    """A frozen global `RewardHead` + a `UserBank`. `user_idx < 0` (unknown user) means the global head alone."""

    def __init__(self, head: RewardHead, n_users: int, user_input: str = "hidden", *, sparse: bool = True) -> None:
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
        return z, self.head.out(h)

    def from_base(
        self, z: torch.Tensor, raw_global: torch.Tensor, user_idx: torch.Tensor
    ) -> tuple[HeadOutput, torch.Tensor]:
        """Head output and the per-sample squared entries of W_u, (B, n_out, k+2), for the prior."""
        known = user_idx >= 0
        rows = self.bank.gather(user_idx.clamp_min(0))
        rows = rows * known.view(-1, 1, 1).to(rows.dtype)
        raw = self.bank.apply(z, raw_global, rows)
        return raw_to_mu_var(raw, self.head.cfg), rows.pow(2)

    def forward(self, x: torch.Tensor, user_idx: torch.Tensor) -> HeadOutput:
        z, raw_global = self.base(x)
        return self.from_base(z, raw_global, user_idx)[0]
