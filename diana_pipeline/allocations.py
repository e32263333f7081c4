"""A bandit test's published allocation (docs/bandit.md): the assignment weights, versioned,
with the moment they take effect. Pure: what a version is, its JSON form, which weights are
in force at a moment, and when a refresh publishes a new version. The places it is published
to are in sinks/, the asset that publishes in assets/outputs.py.

Versions of a test count up from 1; version 0 is the configured split, in force before any
version was published. A version takes effect `PUBLISH_LEAD` after it is published, so that
clients polling every few seconds all switch at the same moment, the one the statistics use
(a client that sees it late switches when it sees it). Versions are never changed once
published: the record of them is what the sample-ratio check and the period-weighted
estimates of any later refresh or backfill read."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from diana_pipeline.config import ExperimentTest, Partitions
from diana_pipeline.windows import naive_utc

PUBLISH_LEAD = timedelta(seconds=5)
# Weights closer than this to the version in force are not worth a new version.
WEIGHT_TOLERANCE = 1e-6


class AllocationError(ValueError):
    """A version that cannot be published or read: one line naming what is wrong."""


@dataclass(frozen=True)
class AllocationVersion:
    """One published allocation of one test."""

    test_id: str
    version: int
    weights: dict[str, float]  # variant → weight, in the test's variant order, summing to 1
    effective_from: datetime  # naive UTC
    published_at: datetime  # naive UTC
    based_on_window: datetime | None  # the window whose posteriors gave it; None: configured

    def __post_init__(self) -> None:
        weights = list(self.weights.values())
        if self.version < 0:
            raise AllocationError(f"{self.test_id}: version {self.version} is negative")
        if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
            raise AllocationError(f"{self.test_id}: weights must be finite and ≥ 0: {weights}")
        if abs(sum(weights) - 1.0) > 1e-9:
            raise AllocationError(f"{self.test_id}: weights sum to {sum(weights)}, not 1")

    def to_json(self) -> str:
        return json.dumps(
            {
                "test_id": self.test_id,
                "version": self.version,
                "weights": self.weights,
                "effective_from": _iso(self.effective_from),
                "published_at": _iso(self.published_at),
                "based_on_window": _iso(self.based_on_window) if self.based_on_window else None,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AllocationVersion:
        try:
            data = json.loads(text)
            return cls(
                test_id=str(data["test_id"]),
                version=int(data["version"]),
                weights={str(k): float(v) for k, v in data["weights"].items()},
                effective_from=_parse(data["effective_from"]),
                published_at=_parse(data["published_at"]),
                based_on_window=_parse(data["based_on_window"])
                if data.get("based_on_window")
                else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AllocationError(f"not a published allocation: {exc}") from None


def configured(test: ExperimentTest) -> AllocationVersion:
    """Version 0: the configured split, in force from the beginning of time."""
    return AllocationVersion(
        test.test_id,
        0,
        _normalised({v.name: v.allocation for v in test.variants}),
        datetime.min,
        datetime.min,
        None,
    )


def in_force(versions: Iterable[AllocationVersion], moment: datetime) -> AllocationVersion | None:
    """Of one test's versions, the one in force at `moment`: the highest version whose
    effective time has come (None when none has)."""
    due = [v for v in versions if v.effective_from <= moment]
    return max(due, key=lambda v: v.version) if due else None


def next_version(
    test: ExperimentTest,
    partitions: Partitions,
    recommended: Mapping[datetime, Mapping[str, float]],
    last: AllocationVersion | None,
    now: datetime,
) -> AllocationVersion | None:
    """The version a live refresh at `now` publishes for a bandit test, or None.

    `recommended`: the `allocation` asset's weights for the window after each window start
    (burn-in included). With `update: window` a version comes once per window, from the
    last window that ended; with `update: run`, whenever the latest window's weights moved.
    """
    now = naive_utc(now)
    current = partitions.grid.window_start(now)  # naive UTC, as the stored windows
    if test.bandit.update == "window":
        ended = [start for start in recommended if start < current]
        if not ended:
            return None
        source = max(ended)
        if last is not None and last.based_on_window is not None and last.based_on_window >= source:
            return None
    else:
        known = [start for start in recommended if start <= current]
        if not known:
            return None
        source = max(known)
    weights = _normalised({v.name: float(recommended[source][v.name]) for v in test.variants})
    if last is not None and all(
        abs(weights[name] - last.weights.get(name, 0.0)) <= WEIGHT_TOLERANCE for name in weights
    ):
        return None
    return AllocationVersion(
        test.test_id,
        (last.version if last else 0) + 1,
        weights,
        now + PUBLISH_LEAD,
        now,
        source,
    )


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        raise AllocationError(f"weights must not all be zero: {dict(weights)}")
    return {name: w / total for name, w in weights.items()}


def _iso(moment: datetime) -> str:
    return naive_utc(moment).isoformat(timespec="microseconds") + "Z"


def _parse(text: str) -> datetime:
    return naive_utc(datetime.fromisoformat(str(text).replace("Z", "+00:00")))
