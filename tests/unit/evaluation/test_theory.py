"""c_N values, the finite-pool oracle prediction and Lemma 4.2 against exact curves on Gaussian pools."""

from __future__ import annotations

import numpy as np
import pytest

from ttp_ray.errors import TTPValidationError
from ttp_ray.evaluation import bon, theory


@pytest.mark.parametrize(("n", "value"), [(1, 0.0), (2, 0.5642), (4, 1.0294), (8, 1.4236), (16, 1.7660),
                                          (30, 2.0427)])
def test_c_n_reference_values(n: int, value: float) -> None:
    assert theory.expected_max_normal(n) == pytest.approx(value, abs=1e-4)


def test_c_n_closed_forms_and_approximation() -> None:
    assert theory.expected_max_normal(2) == pytest.approx(1 / np.sqrt(np.pi), abs=1e-12)
    assert theory.expected_max_normal(3) == pytest.approx(1.5 / np.sqrt(np.pi), abs=1e-12)
    ns = [2, 4, 8, 16, 30]
    assert np.all(theory.sqrt_2_ln_n(ns) > theory.c_n(ns))  # √(2 ln N) over-states c_N at small N
    with pytest.raises(TTPValidationError, match="`n`"):
        theory.expected_max_normal(0)


def test_c4_bias_factor() -> None:
    assert theory.c4(2)[()] == pytest.approx(np.sqrt(2 / np.pi))
    assert theory.c4(30)[()] == pytest.approx(0.99142, abs=1e-5)
    assert theory.c4(1)[()] == 1.0


def _gaussian_pools(q: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = 0.3 + 0.1 * rng.standard_normal((q, m))
    return g.ravel(), np.arange(q + 1) * m


def test_oracle_prediction_matches_exact_on_gaussian_pools() -> None:
    g, offsets = _gaussian_pools(4000, 30, 0)
    ns = [1, 2, 4, 8, 16, 30]
    exact = bon.exact_bon(g, None, offsets, ns).mean(0)
    mean, std, sizes = theory.pool_moments(g, offsets)
    np.testing.assert_allclose(std, g.reshape(-1, 30).std(1, ddof=1))
    corrected = theory.oracle_prediction(mean, std, sizes, ns).mean(0)
    plain = theory.oracle_prediction(mean, std, sizes, ns, finite_pool_correction=False).mean(0)
    gain = exact[-1] - exact[0]
    # unbiased: within Monte-Carlo noise (sd of the mean max of 30 over 4000 pools ~ 0.0006)
    assert np.abs(corrected - exact).max() < 0.02 * gain
    # the plain ddof=1 estimate is biased low by (1 - c4(30)) ≈ 0.9 % of σ·c_N
    assert (plain[1:] < corrected[1:]).all()
    approx = theory.oracle_prediction(mean, std, sizes, ns, approx=True).mean(0)
    assert approx[1] - exact[1] > 0.5 * (exact[1] - exact[0])  # √(2 ln 2) is twice c_2


@pytest.mark.parametrize("rho", [-0.6, 0.0, 0.3, 0.8])
def test_lemma_4_2_correlation_form(rho: float) -> None:
    rng = np.random.default_rng(1)
    q, m = 3000, 16
    z = rng.standard_normal((q, m))
    s = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal((q, m))
    g = 0.4 + 0.1 * z
    ns = [1, 2, 4, 8, 16]
    exact = bon.exact_bon(g.ravel(), s.ravel(), np.arange(q + 1) * m, ns).mean(0)
    pred = 0.4 + theory.lemma42_gain(rho, 0.1, ns)
    assert np.abs(exact - pred).max() < 0.004  # 0.1·c_16 = 0.177 is the oracle gain
