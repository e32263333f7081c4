"""The counting rules (docs/design.md §3) on hand-computed fixtures: every edge case, per window,
and a backfill of 3 windows equal to the live results."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from diana_pipeline.config import ExperimentsConfig, parse_config
from diana_pipeline.counting import (
    Quality,
    VariantCounts,
    cumulative_counts,
    quality,
    window_counts,
)
from diana_pipeline.events import EventColumns, ValidEvent
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.store import EventStore, WriteCounts

TEST = "button-color-test"
SHOW, CLICK = "ButtonDisplayed", "ButtonClicked"


def config_with_one_hour_window() -> ExperimentsConfig:
    text = (
        (REPO_ROOT / "experiments.yaml")
        .read_text()
        .replace("conversion_window: 24h", "conversion_window: 1h")
    )
    return parse_config(text, env={})


def at(hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(2026, 11, 21, hours, minutes)


# (event_id, type, variant, user, time) — hand-written; the comments give the expected effect.
FIXTURE = [
    ("a1", SHOW, "control", "alice", "10:05"),  # alice: control, exposed
    ("a2", CLICK, "control", "alice", "10:06"),  # ... and converted
    ("b1", CLICK, "treatment", "bob", "10:10"),  # bob clicks before his exposure: no success
    ("b2", SHOW, "treatment", "bob", "10:20"),  # bob: treatment, exposed
    ("c1", SHOW, "treatment", "carol", "10:30"),  # carol: treatment
    ("c2", SHOW, "treatment", "carol", "10:40"),  # repeated exposure: still one user
    ("c3", CLICK, "treatment", "carol", "10:45"),  # converted
    ("c4", CLICK, "treatment", "carol", "10:50"),  # a second click: still one success
    ("d1", SHOW, "control", "dave", "10:15"),  # dave sees both variants:
    ("d2", SHOW, "treatment", "dave", "10:35"),  # ... excluded, counted as multi-variant
    ("e1", CLICK, "control", "erin", "10:55"),  # erin never exposed: an orphan
    ("f1", SHOW, "control", "frank", "10:50"),  # frank: control
    ("f2", CLICK, "control", "frank", "11:55"),  # 65 min later: outside the 1h window
    ("g1", SHOW, "treatment", "grace", "11:10"),  # grace: treatment, in window 11:00
    ("g2", CLICK, "treatment", "grace", "11:20"),  # converted in window 11:00
    ("a3", SHOW, "control", "alice", "11:30"),  # alice again: no change
    ("h1", SHOW, "control", "henry", "11:40"),  # henry: control, in window 11:00
    ("h2", CLICK, "control", "henry", "12:10"),  # converts in window 12:00 (30 min later)
]
WINDOWS = [at("10:00"), at("11:00"), at("12:00"), at("13:00")]
# (exposures_inc, successes_inc, exposures_total, successes_total) per window, by hand.
EXPECTED = {
    at("10:00"): {"control": (2, 1, 2, 1), "treatment": (2, 1, 2, 1)},
    at("11:00"): {"control": (1, 0, 3, 1), "treatment": (1, 1, 3, 2)},
    at("12:00"): {"control": (0, 1, 3, 2), "treatment": (0, 0, 3, 2)},
}


def store_events(
    store: EventStore, rows: list[tuple[str, str, str, str, str]], first_offset: int = 0
) -> None:
    config = config_with_one_hour_window()
    events = [
        (
            0,
            first_offset + i,
            ValidEvent(
                eid,
                kind,
                TEST,
                variant,
                user,
                at(t),
                config.partitions.window_start(at(t)).replace(tzinfo=None),
            ),
        )
        for i, (eid, kind, variant, user, t) in enumerate(rows)
    ]
    store.add_events("web-events", EventColumns.of(events), WriteCounts())


def recounted_window(
    store: EventStore, config: ExperimentsConfig, start: datetime, end: datetime
) -> list[tuple]:
    """The window's WindowCounts fields as tuples, by the full recount at its start and end."""
    before = cumulative_counts(store.connection, config, start)
    after = cumulative_counts(store.connection, config, end)
    return [
        (t, v, a.exposures - before[(t, v)].exposures,
         a.successes - before[(t, v)].successes, a.exposures, a.successes)
        for (t, v), a in after.items()
    ]  # fmt: skip


def as_tuples(counts: dict) -> dict:
    return {
        start: {r.variant: (r.exposures_inc, r.successes_inc, r.exposures_total, r.successes_total)
                for r in rows}
        for start, rows in counts.items()
    }  # fmt: skip


def counts_by_window(store: EventStore, config: ExperimentsConfig) -> dict:
    """Every window of the fixture from one call, as a backfill computes them."""
    return as_tuples(window_counts(store.connection, config, list(pairwise(WINDOWS))))


def test_hand_computed_windows(tmp_path: Path) -> None:
    config = config_with_one_hour_window()
    with EventStore.open(tmp_path / "s.duckdb") as store:
        store_events(store, FIXTURE)
        assert counts_by_window(store, config) == EXPECTED
        # dave in two variants; erin never exposed; bob clicked only before his exposure
        assert quality(store.connection, config, at("11:00")) == {TEST: Quality(1, 1, 1, 0)}


def test_a_click_tagged_with_another_variant_counts_for_the_exposure_and_is_flagged(
    tmp_path: Path,
) -> None:
    """ivan is exposed in control and clicks with a treatment tag: a control success, and
    counted by the quality figures; judy clicks before and after her exposure: a success,
    not flagged as early."""
    config = config_with_one_hour_window()
    rows = [
        ("i1", SHOW, "control", "ivan", "10:12"),
        ("i2", CLICK, "treatment", "ivan", "10:14"),
        ("j1", CLICK, "treatment", "judy", "10:01"),
        ("j2", SHOW, "treatment", "judy", "10:02"),
        ("j3", CLICK, "treatment", "judy", "10:03"),
    ]
    with EventStore.open(tmp_path / "s.duckdb") as store:
        store_events(store, rows)
        counts = as_tuples(window_counts(store.connection, config, [(at("10:00"), at("11:00"))]))
        assert counts[at("10:00")] == {"control": (1, 1, 1, 1), "treatment": (1, 1, 1, 1)}
        assert quality(store.connection, config, at("11:00")) == {TEST: Quality(0, 0, 0, 1)}


def test_duplicate_event_ids_count_once(tmp_path: Path) -> None:
    config = config_with_one_hour_window()
    with EventStore.open(tmp_path / "s.duckdb") as store:
        store_events(store, FIXTURE)
        # The same events delivered again at other offsets.
        store_events(store, FIXTURE[:4], first_offset=100)
        assert counts_by_window(store, config) == EXPECTED


def test_a_backfill_of_three_windows_equals_the_live_results(tmp_path: Path) -> None:
    config = config_with_one_hour_window()
    live = {}
    with EventStore.open(tmp_path / "live.duckdb") as store:
        offset = 0
        for start, end in pairwise(WINDOWS):
            # Live: each window's events arrive, then the window is computed.
            arrived = [row for row in FIXTURE if start <= at(row[4]) < end]
            store_events(store, arrived, first_offset=offset)
            offset += len(arrived)
            live |= as_tuples(window_counts(store.connection, config, [(start, end)]))
        backfill = counts_by_window(store, config)
    assert live == backfill == EXPECTED


def test_every_configured_variant_is_reported_even_without_users(tmp_path: Path) -> None:
    config = config_with_one_hour_window()
    with EventStore.open(tmp_path / "s.duckdb") as store:
        counts = cumulative_counts(store.connection, config, at("12:00"))
    assert counts == {
        (TEST, "control"): VariantCounts(0, 0),
        (TEST, "treatment"): VariantCounts(0, 0),
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_successes_never_exceed_exposures(tmp_path: Path, seed: int) -> None:
    config = config_with_one_hour_window()
    rng = random.Random(seed)
    rows = []
    for i in range(3000):
        user = f"u{rng.randrange(300)}"
        minute = rng.randrange(180)
        moment = at("10:00") + timedelta(minutes=minute)
        rows.append(
            (
                f"r{i}",
                rng.choice([SHOW, CLICK, "PageViewed"]),
                rng.choice(["control", "treatment"]),
                user,
                f"{moment:%H:%M}",
            )
        )
    with EventStore.open(tmp_path / "s.duckdb") as store:
        store_events(store, rows)
        for rows in window_counts(store.connection, config, list(pairwise(WINDOWS))).values():
            for row in rows:
                assert 0 <= row.successes_total <= row.exposures_total


# ---- one pass over a range equals the rules at every cutoff (property-based) ---------------

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_event_rows = st.lists(
    st.tuples(
        st.sampled_from([SHOW, CLICK, "PageViewed"]),
        st.sampled_from(["control", "treatment"]),
        st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6"]),
        # Minutes from 09:00, on a coarse grid so that ties and the 60-minute edge happen.
        st.integers(0, 48).map(lambda step: step * 5),
    ),
    max_size=40,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_event_rows)
# A user who switches variant, then clicks within the conversion window, an hour later.
@example(
    rows=[(SHOW, "control", "u1", 50), (SHOW, "treatment", "u1", 55), (CLICK, "control", "u1", 70)]
)
def test_one_pass_over_a_range_equals_the_rules_at_each_cutoff(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, str, str, int]]
) -> None:
    config = config_with_one_hour_window()
    windows = [(at(f"{h}:00"), at(f"{h + 1}:00")) for h in range(9, 13)]
    path = tmp_path_factory.mktemp("counts") / "s.duckdb"
    with EventStore.open(path) as store:
        store_events(
            store,
            [
                (f"e{i}", kind, variant, user, f"{9 + minute // 60}:{minute % 60:02d}")
                for i, (kind, variant, user, minute) in enumerate(rows)
            ],
        )
        one_pass = window_counts(store.connection, config, windows)
        for start, end in windows:
            expected = recounted_window(store, config, start, end)
            assert [tuple(vars(r).values()) for r in one_pass[start]] == expected
