"""The counting rules (design.md §3) on hand-computed fixtures: every edge case, per window,
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
from diana_pipeline.store import EventStore, WriteCounts
from diana_pipeline_tests.conftest import REPO_ROOT

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


def counts_by_window(store: EventStore, config: ExperimentsConfig) -> dict:
    result = {}
    for start, end in pairwise(WINDOWS):
        result[start] = {
            row.variant: (
                row.exposures_inc,
                row.successes_inc,
                row.exposures_total,
                row.successes_total,
            )
            for row in window_counts(store.connection, config, start, end)
        }
    return result


def test_hand_computed_windows(tmp_path: Path) -> None:
    config = config_with_one_hour_window()
    with EventStore.open(tmp_path / "s.duckdb") as store:
        store_events(store, FIXTURE)
        assert counts_by_window(store, config) == EXPECTED
        assert quality(store.connection, config, at("11:00")) == {TEST: Quality(1, 1)}


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
            live[start] = {
                r.variant: (r.exposures_inc, r.successes_inc, r.exposures_total, r.successes_total)
                for r in window_counts(store.connection, config, start, end)
            }
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
        for start, end in pairwise(WINDOWS):
            for row in window_counts(store.connection, config, start, end):
                assert 0 <= row.successes_total <= row.exposures_total
