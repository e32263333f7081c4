"""Exact Bayesian statistics for Beta-Bernoulli A/B tests: P(best), expected loss,
P(superiority), credible intervals and the interval of the relative lift. Deterministic:
no Monte Carlo anywhere.

For arms with posteriors Beta(α_k, β_k),

    P(k best)  = ∫ f_k(x) ∏_{j≠k} F_j(x) dx
    E[max_j p_j − p_k] = ∫ F_k(x) (1 − ∏_{j≠k} F_j(x)) dx     (non-negative; no cancellation)

integrated in logit space on the shared quadrature (diana_pipeline.stats.quadrature, whose
docstring says how, and how accurately).
"""

from __future__ import annotations

import numpy as np
from scipy import special
from scipy.optimize import elementwise

from diana_pipeline.stats._types import ArrayLike, FloatArray
from diana_pipeline.stats.quadrature import (
    _CENTRAL_Z,
    _NODES_PER_PANEL,
    _TAIL_POINTS,
    _ArmCdf,
    _as_arms,
    _check_parameters,
    _densities_and_cdfs,
    _grid,
    _logit_moments,
    _others_product,
)

# Elements per (T, K, N) array in one vectorised block (32 MB), which bounds memory.
_BLOCK_ELEMENTS = 4_000_000


def _best_and_loss(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    grid = _grid(a, b)
    density, cdf = _densities_and_cdfs(a, b, grid)
    others = _others_product(cdf)
    weights = grid.weights[:, None, :]
    best = np.sum(weights * density * others, axis=-1)
    best /= best.sum(axis=-1, keepdims=True)  # the tails left out hold ≤ K · 2e-15
    dx_ds = np.exp(-(grid.minus_log_x + grid.minus_log_1mx))[:, None, :]  # x (1 − x)
    loss = np.sum(weights * dx_ds * cdf * (1.0 - others), axis=-1)
    return best, loss


def _blocked(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    nodes_per_test = (
        a.shape[1] * a.shape[1] * (_CENTRAL_Z.size + 2 * _TAIL_POINTS) * _NODES_PER_PANEL
    )
    block = max(1, _BLOCK_ELEMENTS // nodes_per_test)
    parts = [_best_and_loss(a[i : i + block], b[i : i + block]) for i in range(0, len(a), block)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _shaped(result: FloatArray, like: ArrayLike) -> FloatArray:
    return result.reshape(np.shape(like))


# ---- public API ----------------------------------------------------------------------------


def prob_best(alphas: ArrayLike, betas: ArrayLike) -> FloatArray:
    """P(arm k has the highest rate), per arm; shape (K,) or (T, K), each row summing to 1."""
    a, b = _as_arms(alphas, betas)
    return _shaped(_blocked(a, b)[0], alphas)


def expected_loss(alphas: ArrayLike, betas: ArrayLike) -> FloatArray:
    """E[max_j p_j − p_k]: the rate given up by choosing arm k; shape (K,) or (T, K)."""
    a, b = _as_arms(alphas, betas)
    return _shaped(_blocked(a, b)[1], alphas)


def prob_best_and_expected_loss(
    alphas: ArrayLike, betas: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Both at the cost of one: they share the quadrature."""
    a, b = _as_arms(alphas, betas)
    best, loss = _blocked(a, b)
    return _shaped(best, alphas), _shaped(loss, alphas)


def prob_superiority(
    alpha_a: ArrayLike, beta_a: ArrayLike, alpha_b: ArrayLike, beta_b: ArrayLike
) -> FloatArray | float:
    """P(p_a > p_b) for independent Beta posteriors; broadcasts over arrays of tests."""
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (alpha_a, beta_a, alpha_b, beta_b))
    )
    shape = arrays[0].shape
    alphas = np.stack([arrays[0].ravel(), arrays[2].ravel()], axis=-1)
    betas = np.stack([arrays[1].ravel(), arrays[3].ravel()], axis=-1)
    if alphas.size == 0:
        return np.zeros(shape)
    result = prob_best(alphas, betas)[:, 0].reshape(shape)
    return float(result) if result.ndim == 0 else result


def credible_interval(
    alpha: ArrayLike, beta: ArrayLike, level: float = 0.95
) -> tuple[FloatArray | float, FloatArray | float]:
    """Equal-tailed interval: the (1 − level)/2 and (1 + level)/2 quantiles of Beta(α, β)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"alpha has shape {a.shape} but beta has shape {b.shape}")
    _check_parameters(a, b)
    tail = (1.0 - level) / 2.0
    low = special.betaincinv(a, b, tail)
    high = special.betaincinv(a, b, 1.0 - tail)
    if a.ndim == 0:
        return float(low), float(high)
    return low, high


def uplift_interval(
    alpha_control: ArrayLike,
    beta_control: ArrayLike,
    alpha_variant: ArrayLike,
    beta_variant: ArrayLike,
    level: float = 0.95,
) -> tuple[FloatArray | float, FloatArray | float]:
    """Equal-tailed credible interval of the relative lift p_variant / p_control − 1.

    Method: the exact distribution of the ratio. Its CDF
        G(r) = P(p_v ≤ (1 + r) p_c) = ∫ f_c(x) F_v((1 + r) x) dx
    is integrated on the control's logit grid (or, when the variant is the narrower posterior,
    as ∫ f_v(y) (1 − F_c(y / (1 + r))) dy on the variant's). The inner CDF comes from the
    other arm's own panels, its density's interpolant integrated exactly (no incomplete beta
    function), so G is right to about 1e-10. Its quantiles are found by Chandrupatla's
    bracketing method on log(1 + r) to 1e-12, for all cases at once. Deterministic; no normal
    approximation of the lift."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    arrays = np.broadcast_arrays(
        *(
            np.asarray(v, dtype=np.float64)
            for v in (alpha_control, beta_control, alpha_variant, beta_variant)
        )
    )
    shape = arrays[0].shape
    ac, bc, av, bv = (v.ravel() for v in arrays)
    _check_parameters(np.concatenate([ac, av]), np.concatenate([bc, bv]))
    tail = (1.0 - level) / 2.0
    low, high = _lift_quantiles(ac, bc, av, bv, np.array([tail, 1.0 - tail]))
    if len(shape) == 0:
        return float(low[0]), float(high[0])
    return low.reshape(shape), high.reshape(shape)


def _lift_quantiles(
    ac: FloatArray, bc: FloatArray, av: FloatArray, bv: FloatArray, targets: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The lift at two CDF targets for every case at once (a backfill has one per window)."""
    if ac.size == 0:
        return np.empty(0), np.empty(0)
    _, sd_c = _logit_moments(ac, bc)
    _, sd_v = _logit_moments(av, bv)
    # Integrate over the narrower posterior: the other one's CDF is smooth on its grid.
    control_outer = sd_c <= sd_v
    outer_a, outer_b = np.where(control_outer, ac, av), np.where(control_outer, bc, bv)
    inner_a, inner_b = np.where(control_outer, av, ac), np.where(control_outer, bv, bc)
    grid = _grid(outer_a[:, None], outer_b[:, None])
    density, _ = _densities_and_cdfs(outer_a[:, None], outer_b[:, None], grid)
    weights = grid.weights * density[:, 0, :]  # (cases, nodes)
    log_x = -grid.minus_log_x
    inner_cdf = _ArmCdf(inner_a, inner_b)
    # The inner rate at each outer node: p_v = (1 + r) x when the control is outer, else
    # p_c = x / (1 + r); in log space, log x ± log(1 + r).
    direction = np.where(control_outer, 1.0, -1.0)

    def cdf_gap(log_ratio: FloatArray, case: FloatArray, target: FloatArray) -> FloatArray:
        """G(r) − target, elementwise over the cases still being solved."""
        log_ratio, case, target = np.broadcast_arrays(log_ratio, case, target)
        shape = log_ratio.shape
        rows = case.ravel().astype(np.intp)
        log_y = log_x[rows] + (direction[rows] * log_ratio.ravel())[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            logit_y = np.where(log_y < 0, log_y - np.log(-np.expm1(log_y)), np.inf)
        inner = inner_cdf(rows, logit_y)
        # P(p_v ≤ (1 + r) p_c) = E_c[F_v((1 + r) x)], or E_v[1 − F_c(y / (1 + r))].
        inner = np.where(control_outer[rows, None], inner, 1.0 - inner)
        return np.sum(inner * weights[rows], axis=-1).reshape(shape) - target

    # Bracket log(1 + r) by the 1e-12 and 1 − 1e-12 quantiles of both rates.
    edge = 1e-12
    lo = np.log(special.betaincinv(av, bv, edge)) - np.log(special.betaincinv(ac, bc, 1 - edge))
    hi = np.log(special.betaincinv(av, bv, 1 - edge)) - np.log(special.betaincinv(ac, bc, edge))
    # Chandrupatla's bracketing method on every case and target together: about a dozen CDF
    # evaluations per quantile (bisection takes ~45), and one numpy pass per step for all.
    cases = np.arange(ac.size, dtype=np.float64)[:, None]
    found = elementwise.find_root(
        cdf_gap,
        (lo[:, None], hi[:, None]),
        args=(cases, targets[None, :]),
        tolerances={"xatol": 1e-13, "xrtol": 1e-12},
        maxiter=200,
    )
    if not np.all(found.success):
        bad = int(np.argwhere(~found.success)[0][0])
        raise ArithmeticError(
            f"lift quantiles did not converge for control Beta({ac[bad]}, {bc[bad]}) and "
            f"variant Beta({av[bad]}, {bv[bad]})"
        )
    lifts = np.expm1(found.x)
    return lifts[:, 0], lifts[:, 1]
