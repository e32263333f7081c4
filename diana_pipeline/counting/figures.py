"""What counting hands to the statistics: counts per variant and the quality figures."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantCounts:
    exposures: int
    successes: int


@dataclass(frozen=True)
class Quality:
    multi_variant_users: int  # excluded from the counts
    orphan_success_users: int  # successes by users never exposed
    clicks_before_exposure_users: int = 0  # exposed, but every click came before the exposure
    other_variant_click_users: int = 0  # a click tagged with another variant than the exposure


@dataclass(frozen=True)
class WindowCounts:
    """One variant of one test in one window: increments and totals to the window's end."""

    test_id: str
    variant: str
    exposures_inc: int
    successes_inc: int
    exposures_total: int
    successes_total: int


@dataclass(frozen=True)
class MetricSums:
    """One summed metric of one variant at a cutoff: over the counted users, the sum of each
    user's total, of its square and, for a ratio, of the product of its parts' totals.
    Revenue totals are in micro-units (counting/metric_sums.py), exact integers."""

    total: int = 0
    squares: int = 0
    products: int = 0

    def __add__(self, other: MetricSums) -> MetricSums:
        return MetricSums(
            self.total + other.total, self.squares + other.squares, self.products + other.products
        )


@dataclass(frozen=True)
class SegmentCounts:
    """One variant of one segment of a test's dimension in one window: increments and totals
    to the window's end, as WindowCounts."""

    test_id: str
    dimension: str
    segment: str
    variant: str
    exposures_inc: int
    successes_inc: int
    exposures_total: int
    successes_total: int
