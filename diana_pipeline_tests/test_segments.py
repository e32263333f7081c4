"""Segments from counts (no servers): lumping into (other), records per segment equal to the
overall computation on the segment's counts, SRM per segment, and reversals."""

from __future__ import annotations

from datetime import datetime

from diana_pipeline import stats
from diana_pipeline.analysis import posterior_records
from diana_pipeline.config import parse_config
from diana_pipeline.counting import SegmentCounts, WindowCounts
from diana_pipeline.segments import lumped, reversals, segment_records, segment_srm

CONFIG = parse_config(
    """
tests:
  - test_id: t
    dimensions: [device]
    max_segments: 2
    variants:
      - {name: control, allocation: 0.5}
      - {name: treatment, allocation: 0.5}
"""
)
TEST = CONFIG.tests[0]
START, END = datetime(2026, 11, 21, 10), datetime(2026, 11, 21, 11)


def rows(figures: dict[str, tuple[int, int, int, int]]) -> list[SegmentCounts]:
    """segment -> (control exposed, converted, treatment exposed, converted), totals = incs."""
    found = []
    for segment, (ce, cs, te, ts) in figures.items():
        found.append(SegmentCounts("t", "device", segment, "control", ce, cs, ce, cs))
        found.append(SegmentCounts("t", "device", segment, "treatment", te, ts, te, ts))
    return found


def test_all_but_the_largest_segments_are_lumped_into_other() -> None:
    window = rows({"mobile": (50, 5, 50, 6), "desktop": (40, 4, 40, 4), "tablet": (9, 1, 9, 2),
                   "tv": (1, 0, 2, 1), "(none)": (3, 0, 3, 0)})  # fmt: skip
    [*found] = lumped(TEST, {START: window}, START)[START]
    segments = {(r.segment, r.variant): (r.exposures_total, r.successes_total) for r in found}
    assert segments == {
        ("mobile", "control"): (50, 5), ("mobile", "treatment"): (50, 6),
        ("desktop", "control"): (40, 4), ("desktop", "treatment"): (40, 4),
        ("(other)", "control"): (10, 1), ("(other)", "treatment"): (11, 3),
        ("(none)", "control"): (3, 0), ("(none)", "treatment"): (3, 0),
    }  # fmt: skip


def test_a_segments_records_are_the_overall_computation_on_its_counts() -> None:
    window = rows({"mobile": (500, 50, 480, 70), "desktop": (400, 40, 410, 41)})
    records = segment_records(CONFIG, {START: window}, [(START, END)], END)
    mobile = [r for r in records if r["segment"] == "mobile"]
    counts = [WindowCounts("t", "control", 500, 50, 500, 50),
              WindowCounts("t", "treatment", 480, 70, 480, 70)]  # fmt: skip
    expected = posterior_records(CONFIG, {START: counts}, [(START, END)], END)
    assert [{**r, "dimension": "device", "segment": "mobile"} for r in expected] == mobile


def test_srm_is_judged_per_segment_with_enough_users() -> None:
    window = rows({"mobile": (160, 0, 90, 0), "desktop": (90, 0, 90, 0), "tv": (0, 0, 70, 0)})
    judged = {segment: p for _, segment, p, _ in segment_srm(TEST, window)}
    assert set(judged) == {"mobile", "desktop"}  # tv: 70 users, too few
    assert judged["mobile"] == float(stats.srm_pvalue([160, 90], [0.5, 0.5])) < 0.001
    assert judged["desktop"] == 1.0


def test_a_segment_that_contradicts_a_clear_overall_result_is_found() -> None:
    # Overall treatment wins clearly; on desktop it clearly loses (Simpson-style).
    window = rows({"mobile": (1000, 100, 3000, 600), "desktop": (3000, 900, 1000, 200)})
    overall = [WindowCounts("t", "control", 4000, 1000, 4000, 1000),
               WindowCounts("t", "treatment", 4000, 800, 4000, 800)]  # fmt: skip
    found = reversals(TEST, overall, window)
    # overall: treatment (20%) loses to control (25%); mobile: treatment 20% beats 10%
    assert [(d, s, v) for d, s, v, _, _ in found] == [("device", "mobile", "treatment")]
    assert found[0][3] > 0.95 and found[0][4] < 0.05
