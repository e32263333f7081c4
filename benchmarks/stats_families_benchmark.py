"""Statistics benchmark for the metric families of issue 21: P(best) + expected loss of Gamma
posteriors (count metrics) and normal ones (means per user), beside a 20,000-draw numpy Monte
Carlo on the same posteriors, with the maximum absolute error of each against adaptive-quad
references (Boost's incomplete gamma; scipy's normal CDF) on a random sample of the tests.
Run by benchmarks.stats_benchmark (`make bench-stats`), its section after the Beta one.

    .venv/bin/python -m benchmarks.stats_families_benchmark --sizes 200 --no-write
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from benchmarks.stats_benchmark import ARMS, DRAWS, Result, compare, monte_carlo, progress
from diana_pipeline import stats
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.stats_references import (
    quad_gamma_expected_loss,
    quad_gamma_prob_best,
    quad_normal_expected_loss,
    quad_normal_prob_best,
)
from diana_pipeline.markdown import table

Pair = tuple[np.ndarray, np.ndarray]


def gamma_tests(count: int, seed: int) -> Pair:
    """Counts: 1,000 to 1,000,000 users per arm, 0.05-3 events per user, arms within ±10%;
    the posterior Gamma(0.5 + events, 0.001 + users)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1_000, 1_000_000, size=(count, 1)) * np.ones((1, ARMS), dtype=np.int64)
    rates = rng.uniform(0.05, 3.0, size=(count, 1)) * rng.uniform(0.9, 1.1, size=(count, ARMS))
    events = rng.poisson(users * rates)
    return 0.5 + events, 0.001 + users


def normal_tests(count: int, seed: int) -> Pair:
    """Revenue per user: 1,000 to 1,000,000 users per arm, means 1-50 within ±5%, a spread
    per user of 2-20× the mean; the posterior N(sample mean, sd / √users)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1_000, 1_000_000, size=(count, 1)) * np.ones((1, ARMS))
    means = rng.uniform(1, 50, size=(count, 1)) * rng.uniform(0.95, 1.05, size=(count, ARMS))
    spread = means * rng.uniform(2, 20, size=(count, ARMS))
    errors = spread / np.sqrt(users)
    return means + errors * rng.standard_normal((count, ARMS)), errors


FAMILIES: dict[str, tuple] = {
    "Gamma (count)": (
        gamma_tests,
        stats.prob_best_and_expected_loss_gamma,
        lambda rng, a, b, size: rng.gamma(a, 1.0 / b, size=size),
        (quad_gamma_prob_best, quad_gamma_expected_loss),
    ),
    "normal (mean)": (
        normal_tests,
        stats.prob_best_and_expected_loss_normal,
        lambda rng, m, s, size: rng.normal(m, s, size=size),
        (quad_normal_prob_best, quad_normal_expected_loss),
    ),
}


def benchmark(family: str, count: int, reference_sample: int, seed: int) -> list[Result]:
    make, diana, draw, (ref_best_of, ref_loss_of) = FAMILIES[family]
    p, q = make(count, seed)
    sample = np.random.default_rng(seed + 1).choice(
        count, size=min(reference_sample, count), replace=False
    )
    progress(f"{family}, {count} tests: references on {len(sample)} of them (adaptive quad)")
    ref_best = np.array([ref_best_of(p[i], q[i]) for i in sample])
    ref_loss = np.array([ref_loss_of(p[i], q[i]) for i in sample])
    methods: list[tuple[str, Callable[[], Pair]]] = [
        (f"{family}: diana (exact quadrature)", lambda: diana(p, q)),
        (f"{family}: numpy Monte Carlo, {DRAWS:,} draws", lambda: monte_carlo(draw, p, q)),
    ]
    return compare(methods, count, sample, ref_best, ref_loss)


def render(results: list[Result]) -> str:
    def row(result: Result) -> tuple[str, ...]:
        family = result.method.split(":")[0]
        baseline = next(
            r
            for r in results
            if r.tests == result.tests and r.method.startswith(family) and "Monte" in r.method
        )
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
        "family: method",
        "time (s)",
        "× vs numpy MC",
        "max abs error P(best)",
        "max abs error expected loss",
    ]
    return table(header, [row(r) for r in results], align="llrrrr")


def run(sizes: list[int], reference_sample: int, seed: int, command: str | None) -> str:
    """Both families at every size; writes the section when given the command that ran it."""
    results = [
        result
        for family in FAMILIES
        for count in sizes
        for result in benchmark(family, count, reference_sample, seed)
    ]
    figures = render(results)
    if command is not None:
        write_section(
            BENCHMARKS_PAGE,
            "stats-families-benchmark",
            "Statistics: the Gamma and normal families (issue 21)",
            command,
            "Count metrics: 1,000-1,000,000 users per arm, 0.05-3 events per user, arms within "
            "±10%, Gamma(0.5 + events, 0.001 + users). Means: 1,000-1,000,000 users, means 1-50 "
            "within ±5% and a spread of 2-20× the mean per user, N(mean, sd / √users). Errors "
            f"against adaptive quad on {reference_sample} random tests of each size; the "
            "expected loss in the metric's units (events or currency per user).",
            figures,
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--reference-sample", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.stats_families_benchmark " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(run(args.sizes, args.reference_sample, args.seed, None if args.no_write else command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
