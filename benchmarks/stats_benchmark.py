"""Statistics benchmark: P(best) + expected loss for many A/B tests at once.

Runs, side by side on the same posteriors in the same process:
  - diana     diana_pipeline.stats (exact quadrature, one call for both quantities)
  - numpy MC  a vectorised numpy Monte Carlo at 20,000 draws per test (the usual approach)
  - bayesian-testing  the `bayesian-testing` package at its defaults (20,000 draws)
and reports wall time and the maximum absolute error against high-precision references
(adaptive quad over Boost's incomplete beta) on a random sample of the tests.

    .venv/bin/python -m benchmarks.stats_benchmark            # prints, writes docs/benchmarks.md
    .venv/bin/python -m benchmarks.stats_benchmark --sizes 200 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from diana_pipeline import stats
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.stats_references import quad_expected_loss, quad_prob_best
from diana_pipeline.markdown import table

ARMS = 4
DRAWS = 20_000
PRIOR = 0.5  # bayesian-testing's default prior, Beta(0.5, 0.5), used by all three methods


@dataclass
class Result:
    method: str
    tests: int
    seconds: float
    best_error: float
    loss_error: float


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def make_tests(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Realistic tests: 1,000 to 1,000,000 users per arm, rates 1-50%, arms within ±10%."""
    rng = np.random.default_rng(seed)
    totals = rng.integers(1_000, 1_000_000, size=(count, 1)) * np.ones((1, ARMS), dtype=np.int64)
    rates = rng.uniform(0.01, 0.5, size=(count, 1)) * rng.uniform(0.9, 1.1, size=(count, ARMS))
    positives = rng.binomial(totals, np.clip(rates, 0, 1))
    return totals, positives


def run_diana(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return stats.prob_best_and_expected_loss(alphas, betas)


def monte_carlo(
    draw: Callable[[np.random.Generator, np.ndarray, np.ndarray, tuple[int, ...]], np.ndarray],
    p: np.ndarray,
    q: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """P(best) and expected loss from DRAWS draws per arm of `draw(rng, p, q, size)`, a few
    tests at a time (50 tests × 4 arms × 20,000 draws = 32 MB)."""
    rng = np.random.default_rng(1)
    best = np.empty_like(p, dtype=float)
    loss = np.empty_like(p, dtype=float)
    chunk = 50
    for start in range(0, len(p), chunk):
        a = p[start : start + chunk, :, None]
        b = q[start : start + chunk, :, None]
        draws = draw(rng, a, b, (a.shape[0], p.shape[1], DRAWS))
        winners = draws.argmax(axis=1)
        best[start : start + chunk] = np.stack(
            [(winners == k).mean(axis=1) for k in range(p.shape[1])], axis=1
        )
        loss[start : start + chunk] = (draws.max(axis=1, keepdims=True) - draws).mean(axis=2)
    return best, loss


def run_numpy_monte_carlo(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return monte_carlo(lambda rng, a, b, size: rng.beta(a, b, size=size), alphas, betas)


def run_bayesian_testing(
    totals: np.ndarray, positives: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    from bayesian_testing.experiments import BinaryDataTest

    best = np.empty(totals.shape)
    loss = np.empty(totals.shape)
    for row in range(len(totals)):
        test = BinaryDataTest()
        for arm in range(ARMS):
            test.add_variant_data_agg(f"v{arm}", int(totals[row, arm]), int(positives[row, arm]))
        for arm, variant in enumerate(test.evaluate()):
            best[row, arm] = variant["prob_being_best"]
            loss[row, arm] = variant["expected_loss"]
    return best, loss


# Runs shorter than this are repeated and the best time kept (first calls pay one-time costs:
# page faults, lazy initialisation); the same rule for every method.
REPEAT_BELOW_S = 10.0
REPEATS = 3


def timed(
    function: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> tuple[float, np.ndarray, np.ndarray]:
    started = time.perf_counter()
    best, loss = function()
    seconds = time.perf_counter() - started
    if seconds < REPEAT_BELOW_S:
        for _ in range(REPEATS - 1):
            started = time.perf_counter()
            function()
            seconds = min(seconds, time.perf_counter() - started)
    return seconds, best, loss


def references(
    alphas: np.ndarray, betas: np.ndarray, sample: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    best = np.array([quad_prob_best(alphas[i], betas[i]) for i in sample])
    loss = np.array([quad_expected_loss(alphas[i], betas[i]) for i in sample])
    return best, loss


def benchmark(count: int, reference_sample: int, seed: int) -> list[Result]:
    totals, positives = make_tests(count, seed)
    alphas = PRIOR + positives
    betas = PRIOR + totals - positives
    sample = np.random.default_rng(seed + 1).choice(
        count, size=min(reference_sample, count), replace=False
    )
    progress(f"{count} tests x {ARMS} arms: references on {len(sample)} of them (adaptive quad)")
    ref_best, ref_loss = references(alphas, betas, sample)
    methods: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = [
        ("diana (exact quadrature)", lambda: run_diana(alphas, betas)),
        (f"numpy Monte Carlo, {DRAWS:,} draws", lambda: run_numpy_monte_carlo(alphas, betas)),
        ("bayesian-testing 0.10 (defaults)", lambda: run_bayesian_testing(totals, positives)),
    ]
    return compare(methods, count, sample, ref_best, ref_loss)


def compare(
    methods: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]],
    count: int,
    sample: np.ndarray,
    ref_best: np.ndarray,
    ref_loss: np.ndarray,
) -> list[Result]:
    """Each method timed, and its largest error against the references on the sample."""
    results = []
    for name, function in methods:
        progress(f"{count} tests: {name}")
        seconds, best, loss = timed(function)
        results.append(
            Result(
                name,
                count,
                seconds,
                float(np.abs(best[sample] - ref_best).max()),
                float(np.abs(loss[sample] - ref_loss).max()),
            )
        )
    return results


def render(results: list[Result]) -> str:
    def row(result: Result) -> tuple[str, ...]:
        baseline = next(r for r in results if r.tests == result.tests and "numpy" in r.method)
        return (
            f"{result.tests:,} × {ARMS}",
            result.method,
            f"{result.seconds:.2f}",
            f"{baseline.seconds / result.seconds:.1f}",
            f"{result.best_error:.1e}",
            f"{result.loss_error:.1e}",
        )

    header = [
        "tests × arms",
        "method",
        "time (s)",
        "× vs numpy MC",
        "max abs error P(best)",
        "max abs error expected loss",
    ]
    return table(header, [row(result) for result in results], align="llrrrr")


DESCRIPTION = (
    "Tests with 1,000-1,000,000 users per arm, rates 1-50%, {arms} arms within ±10% of each "
    "other, Beta(0.5, 0.5) prior for every method. Time covers both quantities for all tests "
    "(Diana computes them in one pass). Errors are the maximum absolute difference from "
    "adaptive-quad references on {sample} randomly chosen tests of each size; bayesian-testing "
    "rounds its expected loss to 7 decimals. Runs under {repeat_s:.0f} s are repeated {repeats} "
    "times and the best kept, for every method."
)


def write_docs(results: list[Result], command: str, reference_sample: int) -> None:
    write_section(
        BENCHMARKS_PAGE,
        "stats-benchmark",
        "Statistics: P(best) + expected loss",
        command,
        DESCRIPTION.format(
            arms=ARMS, sample=reference_sample, repeat_s=REPEAT_BELOW_S, repeats=REPEATS
        ),
        render(results),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000, 10_000], help="numbers of tests"
    )
    parser.add_argument(
        "--reference-sample", type=int, default=100, help="tests checked against references"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not update {BENCHMARKS_PAGE.path.name}"
    )
    args = parser.parse_args(argv)
    results: list[Result] = []
    for count in args.sizes:
        results += benchmark(count, args.reference_sample, args.seed)
    print(render(results))
    if not args.no_write:
        command = "python -m benchmarks.stats_benchmark " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        write_docs(results, command.strip(), args.reference_sample)
        print(f"written to {BENCHMARKS_PAGE.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
