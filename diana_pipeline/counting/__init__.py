"""Counting: users exposed and converted per test, variant and window, by the rules of
docs/design.md §3.

    rules.py       the rules as moments per user, and the SQL that turns them into steps
    metric_sums.py the metrics beyond the conversion: per-user totals as steps of sums
    state.py       the per-user state and per-window steps, merged with every stored batch
    fold.py        the batches parallel ingestion runs left for the state's one writer
    from_steps.py  counts and quality figures at window ends, read from the steps
    cohorts.py     users by the window (and allocation version) of their first exposure: a
                   bandit's sample-ratio check and period-weighted estimates
    recount.py     the same rules as a full recount of the events: the reference
    figures.py     the dataclasses handed to the statistics
"""

from diana_pipeline.counting.cohorts import cohort_counts, first_exposures_by_version
from diana_pipeline.counting.figures import (
    MetricSums,
    Quality,
    SegmentCounts,
    VariantCounts,
    WindowCounts,
)
from diana_pipeline.counting.from_steps import metric_sums, quality, segment_counts, window_counts
from diana_pipeline.counting.recount import (
    cumulative_counts,
    recount_metric_sums,
    recount_quality,
    recount_segment_counts,
)
from diana_pipeline.counting.rules import CountingRules

__all__ = [
    "CountingRules",
    "MetricSums",
    "Quality",
    "SegmentCounts",
    "VariantCounts",
    "WindowCounts",
    "cohort_counts",
    "cumulative_counts",
    "first_exposures_by_version",
    "metric_sums",
    "quality",
    "recount_metric_sums",
    "recount_quality",
    "recount_segment_counts",
    "segment_counts",
    "window_counts",
]
