"""Extreme-value theory behind oracle scaling (Theorem 3.1) and Lemma 4.2 (gain = ρ·σ·c_N).

Derivations and the INFERRED parts are in docs/theory.md. Pure numpy/scipy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import integrate, special, stats

from ttp_ray.errors import TTPValidationError

if TYPE_CHECKING:
    from ttp_ray.evaluation.bon import Pools


@lru_cache(maxsize=1024)
def expected_max_normal(n: int) -> float:
    """c_N = E[max of N iid N(0,1)] = ∫ x · N φ(x) Φ(x)^(N-1) dx, by adaptive quadrature (log-space density)."""
    if n < 1:
        raise TTPValidationError(f"`n` must be >= 1, got {n}", parameter="n", value=n)
    if n == 1:
        return 0.0
    log_n = np.log(n)

    def integrand(x: float) -> float:
        return x * np.exp(log_n + stats.norm.logpdf(x) + (n - 1) * stats.norm.logcdf(x))

    # The density of the max is concentrated in [-10, 12] for any n this project uses (n <= 1e6).
    value, _ = integrate.quad(integrand, -10.0, 12.0, points=[np.sqrt(2 * np.log(n))], limit=200,
                              epsabs=1e-12, epsrel=1e-12)
    return float(value)


def c_n(ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """Vector of c_N for every N in `ns` (float64)."""
    return np.array([expected_max_normal(int(n)) for n in np.asarray(ns).ravel()], dtype=np.float64)


def sqrt_2_ln_n(ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """The asymptotic approximation √(2 ln N) of c_N (over-states c_N at small N: 1.18 vs 0.56 at N=2)."""
    return np.sqrt(2.0 * np.log(np.asarray(ns, dtype=np.float64)))


def c4(m: int | np.ndarray) -> np.ndarray:
    """Bias factor of the sample std: E[s_(ddof=1)] = c4(M)·σ for M iid normals (c4(30) ≈ 0.9914).

    Computed as √(2/(M-1)) · Γ(M/2)/Γ((M-1)/2) in log-space; c4(1) is defined as 1 (no spread to correct).
    """
    m = np.asarray(m, dtype=np.float64)
    out = np.ones_like(m)
    ok = m >= 2
    mm = m[ok]
    out[ok] = np.sqrt(2.0 / (mm - 1.0)) * np.exp(special.gammaln(mm / 2.0) - special.gammaln((mm - 1.0) / 2.0))
    return out


def pool_moments(golden: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query pool mean, std (ddof=1; 0 for a single candidate) and size from flat `golden` + `offsets`."""
    sizes = np.diff(offsets)
    q = np.repeat(np.arange(sizes.size), sizes)
    mean = np.bincount(q, golden, minlength=sizes.size) / sizes
    dev = golden - mean[q]
    ss = np.bincount(q, dev * dev, minlength=sizes.size)
    std = np.sqrt(np.divide(ss, sizes - 1, out=np.zeros_like(ss), where=sizes > 1))
    return mean, std, sizes


def oracle_prediction(
    mean: np.ndarray,
    std: np.ndarray,
    sizes: np.ndarray,
    ns: Sequence[int] | np.ndarray,
    *,
    finite_pool_correction: bool = True,
    approx: bool = False,
) -> np.ndarray:
    """Theorem 3.1 per query: μ_q + σ_q · c_min(N, M_q), shape (Q, len(ns)).

    `std` must be the ddof=1 pool std. A uniform N-subset of an iid pool is an iid N-sample, so the exact
    Best-of-N of the pool, averaged over pools, equals E[max of N iid] = μ + σ c_N; dividing s by c4(M)
    makes the estimate unbiased for Gaussian pools (`finite_pool_correction`). `approx` uses √(2 ln N).
    """
    ns = np.asarray(ns, dtype=np.int64)
    n_eff = np.minimum(ns[None, :], sizes[:, None])  # a pool can't give more than M candidates
    table_n = np.arange(1, int(n_eff.max()) + 1)
    table = sqrt_2_ln_n(table_n) if approx else c_n(table_n)
    sigma = std / c4(sizes) if finite_pool_correction else std
    return mean[:, None] + sigma[:, None] * table[n_eff - 1]


def lemma42_gain(rho: np.ndarray | float, sigma: np.ndarray | float, ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """Lemma 4.2: for a bivariate-normal pool, E[g at argmax of the RM] − μ = ρ · σ · c_N (broadcast over ns)."""
    rho = np.asarray(rho, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    return (rho * sigma)[..., None] * c_n(ns)


# ------------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class PlantedRM:
    """A simulated reward model: per-query ρ is +rho_healthy, or −rho_hacked on a `beta` share of the queries
    of non-collapsed users; an `alpha` share of users get constant scores (collapse)."""

    rho_healthy: float = 0.6
    rho_hacked: float = 0.5
    alpha: float = 0.0
    beta: float = 0.0


def simulate_pools(
    rms: Mapping[str, PlantedRM],
    *,
    n_users: int = 100,
    queries_per_user: int = 5,
    pool_size: int = 30,
    mu_sd: float = 0.05,
    sigma: tuple[float, float] = (0.05, 0.15),
    clip01: bool = False,
    spread_hacking: bool = True,
    seed: int = 0,
) -> Pools:
    """Bivariate-normal pools (the model of Theorem 3.1 / Lemma 4.2) with planted collapse and hacking.

    Golden g = μ_q + σ_q·z with μ_q ~ N(0.3, mu_sd²), σ_q ~ U(sigma); an RM scores s = ρ_q·z + √(1−ρ_q²)·ε.
    Exactly round(alpha·U) users collapse and round(beta·Q') of the other users' Q' queries are hacked, spread
    evenly over users by default (`spread_hacking`), else uniformly at random (some users then have most of
    their queries hacked, a negative ρ_u, and count as collapsed).
    `clip01` clips golden to [0, 1] and rounds to 1/50 (ROUGE-like ties). Returns `Pools` ("rouge1" and a
    slightly lower "rougeL").
    """
    rng = np.random.default_rng(seed)
    q = n_users * queries_per_user
    m = pool_size
    user_codes = np.repeat(np.arange(n_users), queries_per_user)
    mu = 0.3 + mu_sd * rng.standard_normal(q)
    sd = rng.uniform(*sigma, size=q)
    z = rng.standard_normal((q, m))
    g = mu[:, None] + sd[:, None] * z
    gl = g - np.abs(0.02 * rng.standard_normal((q, m)))
    if clip01:
        g, gl = (np.round(np.clip(x, 0.0, 1.0) * 50) / 50 for x in (g, gl))
    scores = {}
    for name, spec in rms.items():
        collapsed_users = rng.permutation(n_users)[: int(round(spec.alpha * n_users))]
        collapsed_q = np.isin(user_codes, collapsed_users)
        eligible = np.flatnonzero(~collapsed_q)
        hacked = np.zeros(q, dtype=bool)
        n_hacked = int(round(spec.beta * eligible.size))
        if spread_hacking:  # every user gets floor or ceil of its share: ρ_u stays near its expectation
            # eligible queries are whole users in order: a random rank 0..Q_u-1 inside each user
            rank_in_user = np.argsort(rng.random((eligible.size // queries_per_user, queries_per_user)),
                                      axis=1).argsort(axis=1).ravel()
            user_order = rng.permutation(n_users)[user_codes[eligible]]
            hacked[eligible[np.lexsort((user_order, rank_in_user))][:n_hacked]] = True
        else:
            hacked[rng.permutation(eligible)[:n_hacked]] = True
        rho = np.where(hacked, -spec.rho_hacked, spec.rho_healthy)
        s = rho[:, None] * z + np.sqrt(1 - rho**2)[:, None] * rng.standard_normal((q, m))
        s[collapsed_q] = 0.5  # near-constant prediction: exactly constant here
        scores[name] = s.ravel()
    from ttp_ray.evaluation.bon import Pools

    return Pools(
        users=np.array([f"u{i:05d}" for i in range(n_users)], dtype=object),
        user_codes=user_codes,
        query_ids=np.array([f"q{i:06d}" for i in range(q)], dtype=object),
        offsets=np.arange(q + 1, dtype=np.int64) * m,
        golden={"rouge1": g.ravel(), "rougeL": gl.ravel()},
        scores=scores,
    )
