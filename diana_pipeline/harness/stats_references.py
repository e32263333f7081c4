"""High-precision references for diana_pipeline.stats, shared by its tests
(diana_pipeline_tests/stats/) and by benchmarks/stats_benchmark.py, hence in the harness rather
than in the tests. Slow on purpose: they trade speed for independence and digits.

- mpmath at 20 digits (tanh-sinh quadrature copes with Jeffreys singularities) where its
  incomplete beta is practical (small counts);
- the exact finite sum for integer alpha (Evan Miller's formula) for P(p_b > p_a);
- for 1e4-1e8 trials, where mpmath's incomplete beta does not finish, scipy's adaptive quad
  over Boost's incomplete beta (relative error ~1e-15).
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
from scipy import integrate, special
from scipy import stats as scipy_stats

# ---- references --------------------------------------------------------------------------


def _mpmath_per_arm(alphas: list[float], betas: list[float], integrand, dps: int) -> np.ndarray:
    """For each arm k, ∫_0^1 integrand(k, pdf, cdf, x) dx at `dps` digits (tanh-sinh, split at
    the arms' means)."""
    with mp.workdps(dps):
        a = [mp.mpf(v) for v in alphas]
        b = [mp.mpf(v) for v in betas]

        def pdf(j: int, x: mp.mpf) -> mp.mpf:
            return mp.exp(
                (a[j] - 1) * mp.log(x) + (b[j] - 1) * mp.log1p(-x) - mp.log(mp.beta(a[j], b[j]))
            )

        def cdf(j: int, x: mp.mpf) -> mp.mpf:
            return mp.betainc(a[j], b[j], 0, x, regularized=True)

        def others(k: int, x: mp.mpf) -> mp.mpf:
            return mp.fprod(cdf(j, x) for j in range(len(a)) if j != k)

        cuts = [mp.mpf(0), *sorted(a[j] / (a[j] + b[j]) for j in range(len(a))), mp.mpf(1)]
        return np.array(
            [
                float(mp.quad(lambda x, k=k: integrand(k, pdf, cdf, others, x), cuts))
                for k in range(len(a))
            ]
        )


def mpmath_prob_best(alphas: list[float], betas: list[float], dps: int = 20) -> np.ndarray:
    """P(k best) = ∫ f_k ∏_{j≠k} F_j dx."""
    return _mpmath_per_arm(
        alphas, betas, lambda k, pdf, cdf, others, x: pdf(k, x) * others(k, x), dps
    )


def mpmath_expected_loss(alphas: list[float], betas: list[float], dps: int = 20) -> np.ndarray:
    """E[max_j p_j − p_k] = ∫ F_k (1 − ∏_{j≠k} F_j) dx."""
    return _mpmath_per_arm(
        alphas, betas, lambda k, pdf, cdf, others, x: cdf(k, x) * (1 - others(k, x)), dps
    )


def exact_sum_b_beats_a(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    """P(p_b > p_a) for integer alpha_b, as a finite sum (Evan Miller), at 30 digits."""
    with mp.workdps(30):
        total = mp.fsum(
            mp.beta(alpha_a + i, beta_a + beta_b)
            / ((beta_b + i) * mp.beta(1 + i, beta_b) * mp.beta(alpha_a, beta_a))
            for i in range(alpha_b)
        )
        return float(total)


def _cut_points(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    levels = [1e-10, 1e-6, 1e-3, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 0.999, 1 - 1e-6, 1 - 1e-10]
    return np.unique(
        np.concatenate(
            [special.betaincinv(a, b, levels) for a, b in zip(alphas, betas, strict=True)]
        )
    )


def quad_prob_best(alphas: list[float], betas: list[float]) -> np.ndarray:
    """Adaptive quad over x with Boost's Beta pdf and incomplete beta, between the arms'
    1e-15 quantiles, split at many quantiles of every arm."""
    a, b = np.asarray(alphas, float), np.asarray(betas, float)
    result = []
    for k in range(len(a)):
        low, high = special.betaincinv(a[k], b[k], [1e-15, 1 - 1e-15])
        points = _cut_points(a, b)
        points = points[(points > low) & (points < high)]

        def integrand(x: float, k: int = k) -> float:
            others = [special.betainc(a[j], b[j], x) for j in range(len(a)) if j != k]
            return scipy_stats.beta.pdf(x, a[k], b[k]) * math.prod(others)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            value, _ = integrate.quad(
                integrand, low, high, points=points, limit=500, epsabs=1e-14, epsrel=1e-12
            )
        result.append(value)
    return np.array(result)


def quad_expected_loss(alphas: list[float], betas: list[float]) -> np.ndarray:
    a, b = np.asarray(alphas, float), np.asarray(betas, float)
    low = special.betaincinv(a, b, 1e-15).min()
    high = special.betaincinv(a, b, 1 - 1e-15).max()
    points = _cut_points(a, b)
    points = points[(points > low) & (points < high)]
    result = []
    for k in range(len(a)):

        def integrand(x: float, k: int = k) -> float:
            others = [special.betainc(a[j], b[j], x) for j in range(len(a)) if j != k]
            return special.betainc(a[k], b[k], x) * (1.0 - math.prod(others))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            value, _ = integrate.quad(
                integrand, low, high, points=points, limit=500, epsabs=1e-16, epsrel=1e-12
            )
        result.append(value)
    return np.array(result)


# ---- two arms in logit space: small priors ----------------------------------------------------


def _logit_cdf(a: mp.mpf, b: mp.mpf, s: mp.mpf) -> mp.mpf:
    """I_x(a, b) at x = 1 / (1 + e^−s); through I_{1−x}(b, a) above 0, where x is near 1."""
    if s > 0:
        return 1 - mp.betainc(b, a, 0, 1 / (1 + mp.exp(s)), regularized=True)
    return mp.betainc(a, b, 0, 1 / (1 + mp.exp(-s)), regularized=True)


def _logit_edges(reach: mp.mpf) -> list[mp.mpf]:
    """0, ±1, ±2, ±4, ... out to ±reach: panels that follow both the x transition near 0 and
    the slowly decaying tails of small priors."""
    edges, step = {mp.mpf(0), reach, -reach}, mp.mpf(1)
    while step < reach:
        edges |= {step, -step}
        step *= 2
    return sorted(edges)


def logit_prob_superiority(a1: float, b1: float, a0: float, b0: float) -> mp.mpf:
    """P(p1 > p0) = ∫ g1(s) F0(s) ds, g1 arm 1's density in logit space, at 30 digits. In
    logit space (unlike the x-space references above) priors down to 0.01, whose mass lies
    at x far below 1e-300, stay representable."""
    mp.mp.dps = 30
    a1, b1, a0, b0 = (mp.mpf(v) for v in (a1, b1, a0, b0))
    log_norm = mp.log(mp.beta(a1, b1))

    def integrand(s: mp.mpf) -> mp.mpf:
        log_g = -a1 * mp.log1p(mp.exp(-s)) - b1 * mp.log1p(mp.exp(s)) - log_norm
        return mp.exp(log_g) * _logit_cdf(a0, b0, s)

    return mp.quad(integrand, _logit_edges(80 / min(a1, b1, a0, b0) + 100))


def logit_expected_loss(a0: float, b0: float, a1: float, b1: float) -> tuple[mp.mpf, mp.mpf]:
    """E[max(p0, p1) − p_k] for k = 0, 1, with E[max] = 1 − ∫ F0 F1 dx (dx = x (1 − x) ds),
    in logit space at 30 digits."""
    mp.mp.dps = 30
    a0, b0, a1, b1 = (mp.mpf(v) for v in (a0, b0, a1, b1))

    def integrand(s: mp.mpf) -> mp.mpf:
        weight = mp.exp(-mp.log1p(mp.exp(-s)) - mp.log1p(mp.exp(s)))
        return _logit_cdf(a0, b0, s) * _logit_cdf(a1, b1, s) * weight

    most = 1 - mp.quad(integrand, _logit_edges(mp.mpf(90)))
    return most - a0 / (a0 + b0), most - a1 / (a1 + b1)


def mpmath_lift_cdf(ac: float, bc: float, av: float, bv: float, lift: float) -> mp.mpf:
    """G(r) = P(p_v ≤ (1 + r) p_c) = ∫ g_c(s) F_v(min(1, (1 + r) x)) ds, x = 1 / (1 + e^−s), at
    30 digits in logit space (small priors' mass lies far below x = 1e-300), with panels split
    at the kink where (1 + r) x = 1."""
    mp.mp.dps = 30
    ac, bc, av, bv, ratio = (mp.mpf(v) for v in (ac, bc, av, bv, 1 + lift))
    log_norm = mp.log(mp.beta(ac, bc))

    def integrand(s: mp.mpf) -> mp.mpf:
        log_g = -ac * mp.log1p(mp.exp(-s)) - bc * mp.log1p(mp.exp(s)) - log_norm
        y = ratio / (1 + mp.exp(-s))
        inner = 1 if y >= 1 else mp.betainc(av, bv, 0, y, regularized=True)
        return mp.exp(log_g) * inner

    edges = set(_logit_edges(80 / min(ac, bc, av, bv) + 100))
    if ratio > 1:
        edges.add(-mp.log(ratio - 1))  # logit(1 / ratio)
    return mp.quad(integrand, sorted(edges))


# ---- Gamma and normal families -------------------------------------------------------------


def _mpmath_arms_on_line(pdf, cdf, cuts: list, arms: int, integrand, dps: int) -> np.ndarray:
    """For each arm k, ∫ integrand(k, pdf, cdf, others, x) dx over the cut points (tanh-sinh
    between each pair), at `dps` digits."""

    def others(k: int, x: mp.mpf) -> mp.mpf:
        return mp.fprod(cdf(j, x) for j in range(arms) if j != k)

    return np.array(
        [
            float(mp.quad(lambda x, k=k: integrand(k, pdf, cdf, others, x), cuts))
            for k in range(arms)
        ]
    )


def _gamma_arms(shapes: list[float], rates: list[float], integrand, dps: int) -> np.ndarray:
    """The integrals over λ, taken in u = log λ (dλ = e^u du), where a small shape's mass
    spreads over hundreds of units instead of piling up at λ = 0 (tanh-sinh, split around
    each arm's mode on the scales of both of its sides)."""
    with mp.workdps(dps):
        a = [mp.mpf(v) for v in shapes]
        b = [mp.mpf(v) for v in rates]

        def pdf(j: int, u: mp.mpf) -> mp.mpf:  # the density of u = log λ: f(λ) dλ/du
            return mp.exp(a[j] * (u + mp.log(b[j])) - b[j] * mp.exp(u) - mp.loggamma(a[j]))

        def cdf(j: int, u: mp.mpf) -> mp.mpf:
            return mp.gammainc(a[j], 0, b[j] * mp.exp(u), regularized=True)

        offsets = [-30, -10, -4, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 4, 6, 9]
        points = sorted(
            {
                mp.log(a[j] / b[j]) + mp.mpf(k) * scale
                for j in range(len(a))
                for scale in (mp.mpf(1), 1 / mp.sqrt(a[j]), 1 / a[j])
                for k in offsets
                if not (k > 0 and scale > 1)  # above the mode the fall is double-exponential
            }
        )
        # Finite ends holding less than 1e-20 of any arm (an infinite end makes mpmath
        # evaluate gammainc at e^(huge)): e^{shape·(u − mode)} below, e^{−rate·λ} above.
        low = min(mp.log(a[j] / b[j]) - 50 / a[j] for j in range(len(a)))
        high = max(mp.log((a[j] + 50 + 10 * mp.sqrt(a[j])) / b[j]) for j in range(len(a)))
        cuts = [low, *(p for p in points if low < p < high), high]
        return _mpmath_arms_on_line(pdf, cdf, cuts, len(a), integrand, dps)


def mpmath_gamma_prob_best(shapes: list[float], rates: list[float], dps: int = 20) -> np.ndarray:
    """P(k best) = ∫ f_k ∏_{j≠k} F_j dλ for Gamma(shape, rate) arms."""
    return _gamma_arms(shapes, rates, lambda k, pdf, cdf, others, u: pdf(k, u) * others(k, u), dps)


def mpmath_gamma_expected_loss(
    shapes: list[float], rates: list[float], dps: int = 20
) -> np.ndarray:
    """E[max_j λ_j − λ_k] = ∫ F_k (1 − ∏_{j≠k} F_j) dλ for Gamma(shape, rate) arms."""
    return _gamma_arms(
        shapes,
        rates,
        lambda k, pdf, cdf, others, u: cdf(k, u) * (1 - others(k, u)) * mp.exp(u),
        dps,
    )


def gamma_first_beats_second(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(λ1 > λ2) for λ_i ~ Gamma(a_i, b_i), in closed form: b1 λ1 / (b1 λ1 + b2 λ2) is
    Beta(a1, a2), and λ1 > λ2 exactly when it exceeds b1 / (b1 + b2). Boost's incomplete
    beta (scipy), accurate to ~1e-15 where mpmath's does not finish (10⁶ events and up)."""
    return float(special.betaincc(a1, a2, b1 / (b1 + b2)))


def _quad_arms(pdf, cdf, points: np.ndarray, arms: int, want: str) -> np.ndarray:
    """For each arm k, scipy's adaptive quad of f_k ∏_{j≠k} F_j (`want` = "best") or of
    F_k (1 − ∏_{j≠k} F_j) ("loss") between the first and last point, split at the others."""
    result = []
    for k in range(arms):

        def integrand(x: float, k: int = k) -> float:
            others = math.prod(cdf(j, x) for j in range(arms) if j != k)
            return pdf(k, x) * others if want == "best" else cdf(k, x) * (1.0 - others)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            value, _ = integrate.quad(
                integrand,
                points[0],
                points[-1],
                points=points[1:-1],
                limit=500,
                epsabs=1e-16,
                epsrel=1e-12,
            )
        result.append(value)
    return np.array(result)


_QUAD_LEVELS = [
    1e-15,
    1e-9,
    1e-5,
    0.01,
    0.1,
    0.3,
    0.5,
    0.7,
    0.9,
    0.99,
    1 - 1e-5,
    1 - 1e-9,
    1 - 1e-15,
]


def _quad_gamma(shapes: list[float], rates: list[float], want: str) -> np.ndarray:
    """Gamma arms (large shapes too, where mpmath's incomplete gamma does not converge): in
    λ, over Boost's incomplete gamma, between the arms' 1e-15 and 1 − 1e-15 quantiles."""
    a, r = np.asarray(shapes, float), np.asarray(rates, float)
    quantiles = [special.gammaincinv(s, _QUAD_LEVELS) / q for s, q in zip(a, r, strict=True)]
    points = np.unique(np.concatenate(quantiles))
    log_norm = special.gammaln(a) - a * np.log(r)

    def pdf(j: int, x: float) -> float:
        return math.exp((a[j] - 1) * math.log(x) - r[j] * x - log_norm[j]) if x > 0 else 0.0

    def cdf(j: int, x: float) -> float:
        return float(special.gammainc(a[j], r[j] * x))

    return _quad_arms(pdf, cdf, points, len(a), want)


def quad_gamma_prob_best(shapes: list[float], rates: list[float]) -> np.ndarray:
    """P(k best) for Gamma arms by adaptive quad (see _quad_gamma)."""
    return _quad_gamma(shapes, rates, "best")


def quad_gamma_expected_loss(shapes: list[float], rates: list[float]) -> np.ndarray:
    """E[max_j λ_j − λ_k] for Gamma arms by adaptive quad (see _quad_gamma)."""
    return _quad_gamma(shapes, rates, "loss")


def _quad_normal(means: list[float], sds: list[float], want: str) -> np.ndarray:
    """Normal arms by adaptive quad over scipy's normal CDF, between μ ± 8.3σ of the arms."""
    m, s = np.asarray(means, float), np.asarray(sds, float)
    points = np.unique(np.concatenate([m + z * s for z in np.linspace(-8.3, 8.3, 17)]))

    def pdf(j: int, x: float) -> float:
        z = (x - m[j]) / s[j]
        return math.exp(-0.5 * z * z) / (s[j] * math.sqrt(2 * math.pi))

    def cdf(j: int, x: float) -> float:
        return float(special.ndtr((x - m[j]) / s[j]))

    return _quad_arms(pdf, cdf, points, len(m), want)


def quad_normal_prob_best(means: list[float], sds: list[float]) -> np.ndarray:
    return _quad_normal(means, sds, "best")


def quad_normal_expected_loss(means: list[float], sds: list[float]) -> np.ndarray:
    return _quad_normal(means, sds, "loss")


def _normal_arms(means: list[float], sds: list[float], integrand, dps: int) -> np.ndarray:
    with mp.workdps(dps):
        m = [mp.mpf(v) for v in means]
        s = [mp.mpf(v) for v in sds]

        def pdf(j: int, x: mp.mpf) -> mp.mpf:
            return mp.npdf(x, m[j], s[j])

        def cdf(j: int, x: mp.mpf) -> mp.mpf:
            return mp.ncdf(x, m[j], s[j])

        points = sorted({m[j] + z * s[j] for j in range(len(m)) for z in range(-12, 13, 2)})
        cuts = [-mp.inf, *points, mp.inf]
        return _mpmath_arms_on_line(pdf, cdf, cuts, len(m), integrand, dps)


def mpmath_normal_prob_best(means: list[float], sds: list[float], dps: int = 20) -> np.ndarray:
    """P(k best) = ∫ φ_k ∏_{j≠k} Φ_j dx for normal arms."""
    return _normal_arms(means, sds, lambda k, pdf, cdf, others, x: pdf(k, x) * others(k, x), dps)


def mpmath_normal_expected_loss(means: list[float], sds: list[float], dps: int = 20) -> np.ndarray:
    """E[max_j μ_j − μ_k] = ∫ Φ_k (1 − ∏_{j≠k} Φ_j) dx for normal arms."""
    return _normal_arms(
        means, sds, lambda k, pdf, cdf, others, x: cdf(k, x) * (1 - others(k, x)), dps
    )


def normal_two_arms(m1: float, s1: float, m2: float, s2: float) -> tuple[float, float]:
    """For two normal arms, in closed form at 30 digits: P(X2 > X1) = Φ(δ / σ) and the loss of
    choosing arm 1, E[(X2 − X1)⁺] = δ Φ(δ / σ) + σ φ(δ / σ), with δ = μ2 − μ1 and
    σ = √(σ1² + σ2²)."""
    with mp.workdps(30):
        delta = mp.mpf(m2) - mp.mpf(m1)
        sigma = mp.sqrt(mp.mpf(s1) ** 2 + mp.mpf(s2) ** 2)
        z = delta / sigma
        return float(mp.ncdf(z)), float(delta * mp.ncdf(z) + sigma * mp.npdf(z))
