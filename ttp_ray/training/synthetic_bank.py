"""Synthetic cached features with planted collapse-prone users, for tests and benchmarks of the user stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SyntheticBankData", "synthetic_bank_data"]


@dataclass
class SyntheticBankData:
    features: np.ndarray  # (N, dim) float32
    golden: np.ndarray  # (N,) float32 in [0, 1]
    user_idx: np.ndarray  # (N,) int64
    query_ids: np.ndarray  # (N,) str
    held_out: np.ndarray  # (N,) bool: rows of each user's last `n_eval_queries` queries
    collapse_users: np.ndarray  # (n_collapse,) user indices


def synthetic_bank_data(
    n_users: int = 40,
    n_queries: int = 10,
    n_cands: int = 8,
    dim: int = 16,
    *,
    collapse_frac: float = 0.25,
    n_eval_queries: int = 4,
    seed: int = 0,
) -> SyntheticBankData:
    """Cached-feature data in which a global head cannot rank some users.

    Features are i.i.d. N(0, 1). Normal users score 0.35 + 0.10·w·x + 0.04·v_u·x + noise (w: a population
    direction in the first 4 dimensions, v_u: the user's own direction in the others). Collapse-prone users
    score 0.03 + 0.012·v_u·x + small noise: golden values cluster near zero, and their only signal is a
    direction the population does not share — the setting of paper-notes §6 (Fig. 6) where a Det RM goes flat.
    """
    rng = np.random.default_rng(seed)
    w = np.zeros(dim)
    w[:4] = rng.normal(size=4)
    w /= np.linalg.norm(w)
    collapse = np.sort(rng.permutation(n_users)[: round(collapse_frac * n_users)])
    is_collapse = np.zeros(n_users, dtype=bool)
    is_collapse[collapse] = True
    v = np.zeros((n_users, dim))
    v[:, 4:] = rng.normal(size=(n_users, dim - 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    nq = n_queries + n_eval_queries
    x = rng.normal(size=(n_users, nq, n_cands, dim)).astype(np.float32)
    own = np.einsum("uqcd,ud->uqc", x, v)
    noise = rng.normal(size=(n_users, nq, n_cands))
    pop = x @ w
    g = np.where(is_collapse[:, None, None], 0.03 + 0.012 * own + 0.003 * noise,
                 0.35 + 0.10 * pop + 0.04 * own + 0.03 * noise)
    u = np.broadcast_to(np.arange(n_users)[:, None, None], (n_users, nq, n_cands))
    qi = np.broadcast_to(np.arange(nq)[None, :, None], (n_users, nq, n_cands))
    qids = np.char.add(np.char.add(u.astype(str), "-"), qi.astype(str))
    return SyntheticBankData(
        features=x.reshape(-1, dim),
        golden=np.clip(g, 0, 1).astype(np.float32).reshape(-1),
        user_idx=u.reshape(-1).astype(np.int64),
        query_ids=qids.reshape(-1).astype(object),
        held_out=(qi >= n_queries).reshape(-1),
        collapse_users=collapse,
    )
