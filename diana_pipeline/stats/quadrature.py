"""The logit-space Gauss-Legendre quadrature that the posterior functions share: the grid,
the arms' densities and CDFs at its nodes, one arm's CDF anywhere (_ArmCdf), and the input
checks every family of arms goes through. Pure numpy/scipy, no Monte Carlo.

How it is computed
------------------
The integrals run in logit space, s = log(x / (1 − x)). There, Beta(α, β) becomes a smooth
unimodal density ∝ x^α (1 − x)^β with no endpoint singularity (even for Jeffreys priors,
α, β < 1), whose mean ψ(α) − ψ(β) and variance ψ′(α) + ψ′(β) are known exactly.

The line is cut into panels at each arm's own points (its mean ± whole σ steps out to ±6σ, and
evenly spaced tail points out to bounds that hold at most 1e-15 of its mass each side, from
a Chernoff bound on its moment generating function), and at fixed points around 0, where x
turns from 0 to 1 (a small prior's σ is wider than that whole region). Every arm is thus
resolved, however narrow (10⁸ trials) or wide (a prior) it is next to the others. Each
panel carries a Gauss-Legendre rule. The CDFs F_j at the nodes come from integrating the densities
panel by panel with the rule's cumulative (spectral) integration matrix. That costs one
exp/log per node and arm, where the incomplete beta function costs 1-10 µs at large counts.
Densities are normalised numerically, so log-Beta constants never cancel at 10⁸.

The absolute error is below 1e-9 against high-precision references, from α, β = 0.5 to 10⁸,
and below 1e-6 (the contract) from 0.01 (see diana_pipeline_tests/stats/test_beta.py and
benchmarks/stats_benchmark.py). Smaller α or β are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.polynomial import legendre
from scipy import special

from diana_pipeline.stats._types import ArrayLike, FloatArray

# Quadrature layout (see the module docstring), chosen by measurement against references:
# worst absolute error of P(best) 1.5e-11 over small, Jeffreys and 1e8 cases (coarser layouts
# reach 1e-9 on a Jeffreys arm against a 1,000-trial arm).
_NODES_PER_PANEL = 8
_CENTRAL_Z = np.arange(-6.0, 6.0 + 1e-9, 1.0)
_TAIL_POINTS = 6  # per side, from the ±6σ point out to the tail bound (both included)
_TAIL_MASS = 1e-15  # mass each arm may leave outside its own bounds, per side
# Where x = 1 / (1 + e^−s) turns from 0 to 1. An arm whose σ is wide (a small prior: α or β
# below about 0.4) would otherwise cross this region in one panel, and the loss (which
# weighs x) and the other arms' CDFs there would be missed: every test gets these edges.
_TRANSITION = np.array([-24.0, -8.0, -3.0, -1.0, 0.0, 1.0, 3.0, 8.0, 24.0])
SMALLEST_PARAMETER = 0.01  # below it the contract's 1e-6 is not held: refused


def _gauss_legendre_tables(nodes: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Nodes t and weights w on [-1, 1]; A, whose column l holds the Legendre coefficients of
    ∫_{-1}^{t} ℓ_l for the Lagrange basis ℓ_l on those nodes (so legvander(t) @ A @ g
    integrates g's interpolant from -1 to any t); and Q = A at the nodes themselves."""
    t, w = legendre.leggauss(nodes)
    vandermonde = legendre.legvander(t, nodes - 1)  # V[i, k] = P_k(t_i)
    to_coefficients = np.linalg.inv(vandermonde)  # Legendre coefficients of each ℓ_l
    antiderivatives = np.column_stack(
        [legendre.legint(to_coefficients[:, basis], lbnd=-1) for basis in range(nodes)]
    )
    return t, w, antiderivatives, legendre.legvander(t, nodes) @ antiderivatives


_T, _W, _ANTIDERIVATIVES, _Q = _gauss_legendre_tables(_NODES_PER_PANEL)


# ---- input checks --------------------------------------------------------------------------


def _as_arms(
    alphas: ArrayLike,
    betas: ArrayLike,
    name: str = "alphas/betas",
    check: Callable[[FloatArray, FloatArray], None] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(T, K) float arrays of posterior parameters, checked (by `check`; Beta's by default)."""
    a = np.asarray(alphas, dtype=np.float64)
    b = np.asarray(betas, dtype=np.float64)
    first, second = name.split("/")
    if a.shape != b.shape:
        raise ValueError(f"{name}: {first} has shape {a.shape} but {second} has shape {b.shape}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{name}: expected shape (K,) or (T, K), got {a.shape}")
    if a.shape[-1] < 2:
        raise ValueError(f"{name}: need at least 2 arms, got {a.shape[-1]}")
    if a.ndim == 2 and a.shape[0] == 0:
        raise ValueError(f"{name}: no cases, the (T, K) input has T = 0 rows")
    (check or _check_parameters)(a, b)
    return np.atleast_2d(a), np.atleast_2d(b)


def _check_parameters(a: FloatArray, b: FloatArray) -> None:
    for label, values in (("alpha", a), ("beta", b)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"every {label} must be finite, got {values[~np.isfinite(values)][0]}")
        if np.any(values < SMALLEST_PARAMETER):
            raise ValueError(
                f"every {label} must be ≥ {SMALLEST_PARAMETER} (smaller priors are not computed "
                f"exactly), got {values[values < SMALLEST_PARAMETER][0]:g}"
            )


# ---- the quadrature ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Nodes and weights in the family's variable s, shape (T, N); the same for every arm of
    a test."""

    s: FloatArray
    weights: FloatArray
    panel_half_widths: FloatArray  # (T, P)


def _softplus(s: FloatArray) -> FloatArray:
    return np.logaddexp(0.0, s)


@dataclass(frozen=True)
class _Family:
    """What the quadrature needs of a family of posteriors with two parameters (p, q) per arm,
    in the variable s it integrates over (Beta: the logit of the rate; Gamma: the log of the
    rate; normal: the mean itself)."""

    moments: Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray]]  # of s
    # Points with at most _TAIL_MASS of an arm's mass below and above.
    tail_bounds: Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray]]
    # The log density of s, up to a constant that makes it ≤ about 0 near the mode (it is
    # normalised numerically), for parameters (T, K, 1) at nodes (T, 1, N).
    log_density: Callable[[FloatArray, FloatArray, FloatArray], FloatArray]
    # dx/ds, x the quantity whose loss is measured, at nodes (T, N).
    dx_ds: Callable[[FloatArray], FloatArray]
    # Fixed panel edges every test gets (where x turns, for Beta).
    transition: FloatArray
    # More edges per arm, (T, K, E), kept within the test's bounds: where an integrand turns
    # on a scale finer than the arm's standard deviation (a small Gamma shape's cut-off).
    arm_edges: Callable[[FloatArray, FloatArray], FloatArray] | None = None


def _logit_moments(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean and standard deviation of logit(X), X ~ Beta(a, b)."""
    mean = special.digamma(a) - special.digamma(b)
    sd = np.sqrt(special.polygamma(1, a) + special.polygamma(1, b))
    return mean, sd


def _tail_bounds(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Logit-space points L, U with P(S < L) ≤ 1e-15 and P(S > U) ≤ 1e-15.

    Chernoff: with M(t) = E[e^{tS}] = B(a + t, b − t) / B(a, b) for −a < t < b,
    P(S ≤ s) ≤ M(−λ) e^{λ s} and P(S ≥ s) ≤ M(t) e^{−t s}. Any λ, t give valid bounds; the
    tightest of a few candidates is kept. In log M the ln Γ(a + b) terms cancel exactly."""
    _, sd = _logit_moments(a, b)
    log_eps = np.log(_TAIL_MASS)
    gaussian_rate = np.sqrt(-2.0 * log_eps) / sd
    lower = np.full(a.shape, -np.inf)
    upper = np.full(a.shape, np.inf)
    for fraction in (0.25, 0.5, 0.75, None):
        lam = 0.95 * a if fraction is None else fraction * a
        if fraction is None:
            lam = np.minimum(gaussian_rate, lam)
        log_m = (
            special.gammaln(a - lam)
            - special.gammaln(a)
            + special.gammaln(b + lam)
            - special.gammaln(b)
        )
        lower = np.maximum(lower, (log_eps - log_m) / lam)
        t = 0.95 * b if fraction is None else fraction * b
        if fraction is None:
            t = np.minimum(gaussian_rate, t)
        log_m = (
            special.gammaln(a + t)
            - special.gammaln(a)
            + special.gammaln(b - t)
            - special.gammaln(b)
        )
        upper = np.minimum(upper, (log_m - log_eps) / t)
    return lower, upper


def _beta_log_density(a: FloatArray, b: FloatArray, s: FloatArray) -> FloatArray:
    """x^a (1 − x)^b relative to its mode (s_mode = log(a / b)), so that it peaks at 0 and
    never overflows."""
    mode = np.log(a) - np.log(b)
    minus_log_1mx = _softplus(s)
    density = (_softplus(-mode) - (minus_log_1mx - s)) * a  # −log x = softplus(s) − s
    density += (_softplus(mode) - minus_log_1mx) * b
    return density


BETA = _Family(
    moments=_logit_moments,
    tail_bounds=_tail_bounds,
    log_density=_beta_log_density,
    dx_ds=lambda s: special.expit(s) * special.expit(-s),  # x (1 − x)
    transition=_TRANSITION,
)


def _breakpoints(a: FloatArray, b: FloatArray, family: _Family = BETA) -> FloatArray:
    """Sorted panel edges per test, shape (T, K · points per arm)."""
    mean, sd = family.moments(a, b)
    lower, upper = family.tail_bounds(a, b)
    central = mean[..., None] + sd[..., None] * _CENTRAL_Z
    central = np.clip(central, lower[..., None], upper[..., None])
    fractions = np.linspace(0.0, 1.0, _TAIL_POINTS)
    left_end = np.maximum(lower, central[..., 0])
    right_start = np.minimum(upper, central[..., -1])
    left = lower[..., None] + (left_end - lower)[..., None] * fractions
    right = right_start[..., None] + (upper - right_start)[..., None] * fractions
    pieces = [left, central, right]
    low_end = lower.min(axis=-1, keepdims=True)
    high_end = upper.max(axis=-1, keepdims=True)
    if family.arm_edges is not None:
        # Within the test's outermost bounds, not the arm's own: an arm's edges may serve
        # the integrands between the arms (Gamma's loss weighs λ = e^s all the way up).
        pieces.append(np.clip(family.arm_edges(a, b), low_end[..., None], high_end[..., None]))
    edges = np.concatenate(pieces, axis=-1).reshape(lower.shape[0], -1)
    # The transition edges, kept within each test's outermost bounds (clipped ones make
    # zero-width panels, which hold nothing). Every test gets all of them, whatever else is
    # computed beside it: a window's figures must not depend on its batch.
    inside = np.clip(family.transition, low_end, high_end)
    return np.sort(np.concatenate([edges, inside], axis=-1), axis=-1)


def _grid(a: FloatArray, b: FloatArray, family: _Family = BETA) -> _Grid:
    edges = _breakpoints(a, b, family)
    mid = 0.5 * (edges[:, 1:] + edges[:, :-1])
    half = 0.5 * (edges[:, 1:] - edges[:, :-1])
    t_count = edges.shape[0]
    s = (mid[..., None] + half[..., None] * _T).reshape(t_count, -1)  # (T, P·M)
    weights = (half[..., None] * _W).reshape(t_count, -1)
    return _Grid(s, weights, half)


# One matrix for both panel integrals (column 0) and partial integrals at each node (1..M).
_PANEL_MATRIX = np.column_stack([_W, _Q.T])


def _densities_and_cdfs(
    a: FloatArray, b: FloatArray, grid: _Grid, family: _Family = BETA
) -> tuple[FloatArray, FloatArray]:
    """Normalised densities g_k(s) and CDFs F_k(s) at the nodes, shape (T, K, N)."""
    # The constant of the log density is fixed by normalising numerically.
    density = family.log_density(a[..., None], b[..., None], grid.s[:, None, :])
    np.exp(density, out=density)  # (T, K, N)
    t_count, k_count, _ = density.shape
    panels = grid.panel_half_widths.shape[1]
    # A single 2-D product (one BLAS call) instead of many tiny batched ones.
    integrals = (density.reshape(-1, _NODES_PER_PANEL) @ _PANEL_MATRIX).reshape(
        t_count, k_count, panels, _NODES_PER_PANEL + 1
    )
    integrals *= grid.panel_half_widths[:, None, :, None]
    panel_integrals = integrals[..., 0]  # (T, K, P)
    before_panel = np.cumsum(panel_integrals, axis=-1) - panel_integrals
    cumulative = integrals[..., 1:] + before_panel[..., None]
    total = panel_integrals.sum(axis=-1)[..., None]
    cumulative = cumulative.reshape(t_count, k_count, -1)
    cumulative /= total
    np.clip(cumulative, 0.0, 1.0, out=cumulative)
    density /= total
    return density, cumulative


def _others_product(cdfs: FloatArray) -> FloatArray:
    """∏_{j≠k} F_j for every k, by prefix and suffix products (no division by zero).
    A loop over the few arms: numpy's cumprod along a middle axis is several times slower."""
    arms = cdfs.shape[1]
    prefix = [np.ones_like(cdfs[:, 0])]
    for k in range(arms - 1):
        prefix.append(prefix[-1] * cdfs[:, k])
    others = np.empty_like(cdfs)
    suffix = np.ones_like(cdfs[:, 0])
    for k in range(arms - 1, -1, -1):
        others[:, k] = prefix[k] * suffix
        suffix = suffix * cdfs[:, k]
    return others


class _ArmCdf:
    """The CDF of one Beta arm per case, at any logit-space points: the normalised density's
    interpolant on each panel of the arm's own grid, integrated exactly. Costs a few dozen
    flops per point where the incomplete beta function costs 1-10 µs at large counts."""

    def __init__(self, a: FloatArray, b: FloatArray) -> None:
        a2, b2 = a[:, None], b[:, None]
        grid = _grid(a2, b2)
        density, _ = _densities_and_cdfs(a2, b2, grid)
        cases, panels = grid.panel_half_widths.shape
        self.edges = _breakpoints(a2, b2)  # (cases, panels + 1)
        self.half = grid.panel_half_widths
        self.mid = 0.5 * (self.edges[:, 1:] + self.edges[:, :-1])
        self.values = density[:, 0, :].reshape(cases, panels, _NODES_PER_PANEL)
        within = (self.values @ _W) * self.half
        self.before = np.cumsum(within, axis=-1) - within

    def __call__(self, rows: npt.NDArray[np.intp], s: FloatArray) -> FloatArray:
        """F at points s (m, N) of the cases `rows` (m,)."""
        edges = self.edges[rows]
        low, high = edges[:, :1], edges[:, -1:]
        span = high - low
        inside = np.clip(s, low, high)
        # Panel of each point: one searchsorted over all rows, each row's edges and points
        # scaled to [0, 1] and shifted by 2 × its row number.
        shift = 2.0 * np.arange(len(rows))[:, None]
        flat_edges = ((edges - low) / span + shift).ravel()
        found = np.searchsorted(flat_edges, ((inside - low) / span + shift).ravel(), "right")
        panels = edges.shape[1] - 1
        panel = np.clip(
            found.reshape(s.shape) - 1 - edges.shape[1] * np.arange(len(rows))[:, None],
            0,
            panels - 1,
        )
        row = rows[:, None]
        half = self.half[row, panel]
        # Zero-width panels (edges clipped together) hold nothing; their t is irrelevant.
        t = np.divide(inside - self.mid[row, panel], half, out=np.zeros_like(s), where=half > 0)
        basis = legendre.legvander(t, _NODES_PER_PANEL) @ _ANTIDERIVATIVES
        partial = np.einsum("mnl,mnl->mn", basis, self.values[row, panel]) * half
        cdf = np.clip(self.before[row, panel] + partial, 0.0, 1.0)
        return np.where(s <= low, 0.0, np.where(s >= high, 1.0, cdf))


# ---- P(best) and expected loss, for any family -----------------------------------------------

# Elements per (T, K, N) array in one vectorised block (32 MB), which bounds memory.
_BLOCK_ELEMENTS = 4_000_000


def _best_and_loss(a: FloatArray, b: FloatArray, family: _Family) -> tuple[FloatArray, FloatArray]:
    """P(k best) = ∫ g_k ∏_{j≠k} F_j ds and E[max_j x_j − x_k] = ∫ F_k (1 − ∏_{j≠k} F_j) dx,
    the latter non-negative term by term (no cancellation)."""
    grid = _grid(a, b, family)
    density, cdf = _densities_and_cdfs(a, b, grid, family)
    others = _others_product(cdf)
    weights = grid.weights[:, None, :]
    best = np.sum(weights * density * others, axis=-1)
    best /= best.sum(axis=-1, keepdims=True)  # the tails left out hold ≤ K · 2e-15
    dx_ds = family.dx_ds(grid.s)[:, None, :]
    loss = np.sum(weights * dx_ds * cdf * (1.0 - others), axis=-1)
    return best, loss


def best_and_loss(a: FloatArray, b: FloatArray, family: _Family) -> tuple[FloatArray, FloatArray]:
    """P(best) and expected loss of checked (T, K) arms, in blocks that bound memory."""
    nodes_per_test = (
        a.shape[1] * a.shape[1] * (_CENTRAL_Z.size + 2 * _TAIL_POINTS) * _NODES_PER_PANEL
    )
    block = max(1, _BLOCK_ELEMENTS // nodes_per_test)
    parts = [
        _best_and_loss(a[i : i + block], b[i : i + block], family) for i in range(0, len(a), block)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
