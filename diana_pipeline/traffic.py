"""Synthetic web traffic for A/B tests: the engine behind `traffic_job` and `diana-traffic`.

Each visit of a user exposes them to every selected test (an exposure event, in the variant
the hash of (test, user) gives) and, with that variant's success probability, produces a
success event a short random time later. Optional noise exercises the pipeline's defences:
duplicate deliveries, clicks from users never exposed, malformed messages, and users
re-exposed in a second variant.

Pacing follows a schedule (visit i is due at start + i · interval), so the requested rate
holds over the whole run, whatever each send costs. Unthrottled (eps None), events go out as
fast as they can be made, with their timestamps taken from the clock.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from diana_pipeline import markdown
from diana_pipeline.allocation_follower import AllocationFollower
from diana_pipeline.allocations import AllocationVersion
from diana_pipeline.assignment import VariantAssigner, assignment_point
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.events import TimestampFormatter
from diana_pipeline.producer import Deliveries, check_topic, flush, make_producer, produce
from diana_pipeline.traffic_metrics import expected_metric_sums
from diana_pipeline.windows import from_microseconds

log = logging.getLogger(__name__)

MAX_SUCCESS_DELAY_S = 10.0
PROGRESS_INTERVAL_S = 0.5


class TrafficError(ValueError):
    """The traffic specification is invalid; the message names the problem."""


@dataclass(frozen=True)
class NoiseRates:
    """Optional faults, as probabilities per visit (per event for duplicates)."""

    duplicate: float = 0.0  # an event is delivered twice (same event_id)
    orphan_click: float = 0.0  # a success event from a user never exposed
    malformed: float = 0.0  # an extra message that is not a valid event
    cross_variant: float = 0.0  # a returning user is exposed again in another variant


@dataclass(frozen=True)
class ExtraEvent:
    """Another event a visit may send (e.g. Purchase, PageError), for the metrics beyond the
    conversion: per variant its probability per visit and, optionally, the mean of its value
    (lognormal with σ = 1, in cents)."""

    event_type: str
    rates: dict[str, float]  # variant -> probability per visit
    value_means: dict[str, float] | None = None  # variant -> mean value; None: no value


@dataclass(frozen=True)
class PropertySpec:
    """A property every exposure carries (docs/segments.md), e.g. device: each user's value
    drawn once from the weights (by a hash of the user, so a user keeps it), and per value a
    factor on the success probability (a per-segment effect; 1 when absent)."""

    name: str
    weights: dict[str, float]  # value -> share of users
    effects: dict[str, float] = field(default_factory=dict)  # value -> success factor


@dataclass(frozen=True)
class TrafficSpec:
    probabilities: dict[str, dict[str, float]]  # test_id -> variant -> success probability
    eps: float | None = 50.0  # events per second; None = unthrottled
    duration_s: float | None = None
    count: int | None = None  # total messages to send
    users: int | None = None  # distinct users available; None = a new user every visit
    repeat_rate: float = 0.0  # share of visits by a user seen before
    seed: int | None = None
    mean_success_delay_s: float = 1.0
    noise: NoiseRates = NoiseRates()
    extra_events: tuple[ExtraEvent, ...] = ()
    properties: tuple[PropertySpec, ...] = ()
    # Assign new users by the latest published allocation (docs/bandit.md), not the
    # configured split; a user keeps the variant of their first visit.
    follow_allocation: bool = False


def build_spec(
    config: ExperimentsConfig,
    probabilities: dict[str, float],
    *,
    tests: list[str] | None = None,
    eps: float | None = 50.0,
    duration_s: float | None = None,
    count: int | None = None,
    users: int | None = None,
    repeat_rate: float = 0.0,
    seed: int | None = None,
    mean_success_delay_s: float = 1.0,
    noise: NoiseRates | None = None,
    extra_events: tuple[ExtraEvent, ...] = (),
    properties: tuple[PropertySpec, ...] = (),
    follow_allocation: bool = False,
) -> TrafficSpec:
    """Check user-facing settings against experiments.yaml; TrafficError names the problem.

    `probabilities` maps variant names to success probabilities; a name applies to every
    selected test that has that variant."""
    selected = tests or [t.test_id for t in config.tests]
    known_tests = {t.test_id: t for t in config.tests}
    for test_id in selected:
        if test_id not in known_tests:
            raise TrafficError(
                f"unknown test {test_id!r}; experiments.yaml has {sorted(known_tests)}"
            )
    all_variants = {v for t in selected for v in known_tests[t].variant_names}
    for variant, probability in probabilities.items():
        if variant not in all_variants:
            raise TrafficError(
                f"unknown variant {variant!r} in the success probabilities; "
                f"the tests have {sorted(all_variants)}"
            )
        if not 0.0 <= probability <= 1.0:
            raise TrafficError(
                f"success probability of {variant} must be in [0, 1], got {probability:g}"
            )
    per_test: dict[str, dict[str, float]] = {}
    for test_id in selected:
        missing = [v for v in known_tests[test_id].variant_names if v not in probabilities]
        if missing:
            example = ",".join(f"{v}=0.3" for v in known_tests[test_id].variant_names)
            raise TrafficError(
                f"no success probability for variant(s) {', '.join(missing)} of test {test_id} "
                f'(e.g. --prob "{example}")'
            )
        per_test[test_id] = {v: probabilities[v] for v in known_tests[test_id].variant_names}
    if eps is not None and not eps > 0:
        raise TrafficError(f"events per second must be > 0 (or unthrottled), got {eps:g}")
    if duration_s is None and count is None:
        raise TrafficError("give a duration or a count of events")
    if duration_s is not None and not duration_s > 0:
        raise TrafficError(f"duration must be > 0 seconds, got {duration_s:g}")
    if count is not None and count < 1:
        raise TrafficError(f"count must be ≥ 1, got {count}")
    if users is not None and users < 1:
        raise TrafficError(f"users must be ≥ 1, got {users}")
    if not 0.0 <= repeat_rate < 1.0:
        raise TrafficError(f"repeat-visit rate must be in [0, 1), got {repeat_rate:g}")
    if not mean_success_delay_s >= 0:
        raise TrafficError(f"mean success delay must be ≥ 0, got {mean_success_delay_s:g}")
    noise = noise or NoiseRates()
    for name, rate in vars(noise).items():
        if not 0.0 <= rate <= 1.0:
            raise TrafficError(f"noise rate {name} must be in [0, 1], got {rate:g}")
    for extra in extra_events:
        _check_extra_event(extra, [known_tests[t] for t in selected])
    for spec in properties:
        _check_property(spec)
    return TrafficSpec(
        probabilities=per_test,
        eps=eps,
        duration_s=duration_s,
        count=count,
        users=users,
        repeat_rate=repeat_rate,
        seed=seed,
        mean_success_delay_s=mean_success_delay_s,
        noise=noise,
        extra_events=tuple(extra_events),
        properties=tuple(properties),
        follow_allocation=follow_allocation,
    )


def _check_extra_event(extra: ExtraEvent, tests: list) -> None:
    for test in tests:
        if extra.event_type in (test.exposure_event, test.success_event):
            raise TrafficError(
                f"extra event {extra.event_type} is test {test.test_id}'s exposure or success "
                "event; those follow --prob"
            )
        for label, mapping in (("rate", extra.rates), ("value mean", extra.value_means)):
            if mapping is None:
                continue
            missing = [v for v in test.variant_names if v not in mapping]
            if missing:
                raise TrafficError(
                    f"extra event {extra.event_type}: no {label} for variant(s) "
                    f"{', '.join(missing)} of test {test.test_id}"
                )
    if any(not 0.0 <= r <= 1.0 for r in extra.rates.values()):
        raise TrafficError(f"extra event {extra.event_type}: rates must be in [0, 1]")
    if extra.value_means and any(not m > 0 for m in extra.value_means.values()):
        raise TrafficError(f"extra event {extra.event_type}: value means must be > 0")


def _check_property(spec: PropertySpec) -> None:
    if not re.fullmatch(r"[a-z0-9_]{1,64}", spec.name):
        raise TrafficError(f"property name {spec.name!r} must be 1 to 64 of a-z, 0-9 and _")
    if not spec.weights or any(not w > 0 for w in spec.weights.values()):
        raise TrafficError(f"property {spec.name}: give each value a weight > 0")
    if any(not 0 < len(v) <= 64 for v in spec.weights):
        raise TrafficError(f"property {spec.name}: values must have 1 to 64 characters")
    unknown = sorted(set(spec.effects) - set(spec.weights))
    if unknown:
        raise TrafficError(f"property {spec.name}: effect for unknown value(s) {unknown}")
    if any(not f >= 0 for f in spec.effects.values()):
        raise TrafficError(f"property {spec.name}: effects must be ≥ 0")


def parse_property(text: str, effects: str | None = None) -> PropertySpec:
    """'device=desktop:0.5,mobile:0.4,tablet:0.1' (and, for its effects, 'mobile:1.2') ->
    a PropertySpec."""
    name, weights = _named_pairs(text, "device=mobile:0.5")
    return PropertySpec(name, weights, _pairs(effects, "mobile:1.2") if effects else {})


def parse_extra_event(text: str, values: str | None = None) -> ExtraEvent:
    """'Purchase=control:0.1,treatment:0.12' (and, for its values, 'control:25,treatment:27')
    -> an ExtraEvent."""
    event_type, rates = _named_pairs(text, "Purchase=control:0.1")
    return ExtraEvent(event_type, rates, _pairs(values, "control:25") if values else None)


def _named_pairs(text: str, example: str) -> tuple[str, dict[str, float]]:
    """'NAME=key:number,...' -> (NAME, {key: number})."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise TrafficError(f"expected NAME=key:number,... such as {example}, got {text!r}")
    return name.strip(), _pairs(rest, example.partition("=")[2])


def _pairs(text: str, example: str) -> dict[str, float]:
    """'key:number,...' -> {key: number}."""
    try:
        return parse_probabilities(text.replace(":", "="))
    except TrafficError:
        raise TrafficError(f"expected key:number pairs such as {example}, got {text!r}") from None


def parse_probabilities(text: str) -> dict[str, float]:
    """'control=0.35,treatment=0.55' -> {'control': 0.35, 'treatment': 0.55}."""
    result: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            result[name.strip()] = float(value)
        except ValueError:
            raise TrafficError(
                f"expected variant=probability pairs such as control=0.35, got {part!r}"
            ) from None
    if not result:
        raise TrafficError("no success probabilities given")
    return result


@dataclass
class TrafficSummary:
    """What a run sent, and what the pipeline should count from it."""

    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (test, type, variant)
    exposed_users: Counter[tuple[str, str]] = field(default_factory=Counter)  # clean, per variant
    converted_users: Counter[tuple[str, str]] = field(default_factory=Counter)
    noise: Counter[str] = field(default_factory=Counter)
    # per test, variant and metric beyond the conversion: the sums the pipeline must reach
    expected_metrics: list[dict[str, object]] = field(default_factory=list)
    # (test, property, value, variant, "exposed" | "converted") -> users, as segments count
    segment_users: Counter[tuple[str, str, str, str, str]] = field(default_factory=Counter)
    deliveries: Deliveries = field(default_factory=Deliveries)
    # following a published allocation: each version as first used (test_id, version,
    # weights, the event time of its first new user)
    allocations_used: list[dict[str, object]] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def sent(self) -> int:
        return self.deliveries.produced

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "delivered": self.deliveries.delivered,
            "failed": dict(self.deliveries.failed),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.rate, 1),
            "interrupted": self.interrupted,
            "events": [
                {"test_id": t, "event_type": e, "variant": v, "count": n}
                for (t, e, v), n in sorted(self.events.items())
            ],
            "expected_counts": [
                {
                    "test_id": t,
                    "variant": v,
                    "exposed_users": n,
                    "converted_users": self.converted_users[(t, v)],
                }
                for (t, v), n in sorted(self.exposed_users.items())
            ],
            "expected_metrics": self.expected_metrics,
            "expected_segments": self.expected_segments(),
            "noise": dict(self.noise),
            "allocations_used": self.allocations_used,
        }

    def expected_segments(self) -> list[dict[str, object]]:
        """Per test, property, value and variant, the users the segments must count."""
        rows = []
        for (test_id, dimension, segment, variant, kind), users in sorted(
            self.segment_users.items()
        ):
            if kind == "exposed":
                converted = self.segment_users[(test_id, dimension, segment, variant, "converted")]
                rows.append({"test_id": test_id, "dimension": dimension, "segment": segment,
                             "variant": variant, "exposed_users": users,
                             "converted_users": converted})  # fmt: skip
        return rows

    def table(self) -> str:
        """The events sent, then the users the pipeline should count, as markdown tables."""
        events = markdown.table(
            ("test", "variant", "event type", "events"),
            [(t, v, e, f"{n:,}") for (t, e, v), n in sorted(self.events.items())],
            align="lllr",
        )
        counted = [
            (t, v, exposed, self.converted_users[(t, v)])
            for (t, v), exposed in sorted(self.exposed_users.items())
        ]
        users = markdown.table(
            ("test", "variant", "exposed users", "converted users", "rate"),
            [
                (
                    t,
                    v,
                    f"{exposed:,}",
                    f"{converted:,}",
                    f"{converted / exposed if exposed else 0:.4f}",
                )
                for t, v, exposed, converted in counted
            ],
            align="llrrr",
        )
        if not self.expected_metrics:
            return f"{events}\n\n{users}"
        metrics = markdown.table(
            ("test", "variant", "metric", "record field", "expected"),
            [(r["test_id"], r["variant"], r["metric"], r["field"], f"{r['value']:,}")
             for r in self.expected_metrics],
            align="llllr",
        )  # fmt: skip
        return f"{events}\n\n{users}\n\n{metrics}"


@dataclass(frozen=True)
class _TestPlan:
    test_id: str
    assigner: VariantAssigner
    probabilities: list[float]  # by variant index
    exposure_parts: list[str]  # JSON middle part per variant, exposure event
    success_parts: list[str]
    exposure_event: str
    success_event: str
    max_delay_s: float


def _json_middle(event_type: str, test_id: str, variant: str) -> str:
    # The fields that do not change per event, escaped once.
    return (
        f'"event_type":{json.dumps(event_type)},"test_id":{json.dumps(test_id)},'
        f'"variant":{json.dumps(variant)},'
    )


_MALFORMED = (
    b"this is not json",
    b'{"event_id": "truncated", "event_type": "ButtonDisp',
    b'{"event_type": "ButtonClicked", "test_id": "%(test)s", "variant": "%(variant)s"}',  # no ids
    b'{"event_id": 17, "event_type": ["ButtonDisplayed"], "test_id": "%(test)s", '
    b'"variant": "%(variant)s", "user_id": null, "timestamp": "yesterday"}',
    b'{"event_id": "x", "event_type": "ButtonDisplayed", "test_id": "%(test)s", '
    b'"variant": "no-such-variant", "user_id": "u", "timestamp": "2026-11-21T00:00:00.000Z"}',
    b"\xff\xfe not utf-8 \x00",
)


class _RandomStream:
    """Scalar draws from one seeded generator, made in blocks: a numpy call per draw costs
    more than the whole rest of an event. Deterministic for a given seed."""

    _BLOCK = 65_536

    def __init__(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)
        self._uniforms: list[float] = []
        self._exponentials: list[float] = []
        self._normals: list[float] = []

    def uniform(self) -> float:
        if not self._uniforms:
            self._uniforms = self._rng.random(self._BLOCK).tolist()
        return self._uniforms.pop()

    def exponential(self) -> float:
        """A standard exponential draw (mean 1)."""
        if not self._exponentials:
            self._exponentials = self._rng.standard_exponential(self._BLOCK).tolist()
        return self._exponentials.pop()

    def normal(self) -> float:
        """A standard normal draw."""
        if not self._normals:
            self._normals = self._rng.standard_normal(self._BLOCK).tolist()
        return self._normals.pop()

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.uniform() * n), n - 1)


@dataclass(order=True)
class _PendingSuccess:
    due_s: float
    seq: int
    key: bytes = field(compare=False)
    payload: bytes = field(compare=False)
    plan_index: int = field(compare=False)
    user_index: int = field(compare=False)
    variant: int = field(compare=False)


# Per user and test: not exposed, exposed, exposed and converted, seen in two variants.
_UNSEEN, _EXPOSED, _CONVERTED, _MIXED = 0, 1, 2, 3


class TrafficRun:
    """One run of traffic into Kafka. Call `run()`; `stop()` (from a signal) ends it early.

    Every message goes through `_emit`, which enforces the count, so a run with a count sends
    exactly that many messages; the summary counts only what was actually sent."""

    def __init__(
        self,
        config: ExperimentsConfig,
        spec: TrafficSpec,
        on_progress: Callable[[TrafficSummary], None] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.summary = TrafficSummary()
        self._on_progress = on_progress
        self._stop = False
        self._random = _RandomStream(spec.seed)
        self._limit = spec.count if spec.count is not None else sys.maxsize
        self._run_id = os.urandom(4).hex()  # event ids stay unique across runs, seeded or not
        self._user_prefix = f"u{spec.seed}-" if spec.seed is not None else f"u{self._run_id}-"
        self._plans = [self._plan(test_id, p) for test_id, p in spec.probabilities.items()]
        self._next_user = 0
        self._user_state = [bytearray() for _ in self._plans]
        # each user's variant index + 1 (0: not yet assigned): users keep their variant
        self._user_variant = [bytearray() for _ in self._plans]
        self._follower: AllocationFollower | None = None
        self._assigners: dict[tuple[str, int], VariantAssigner] = {}
        self._event_seq = 0
        self._timestamps = TimestampFormatter()
        self._pending: list[_PendingSuccess] = []  # successes waiting for their time
        # (plan, user, event type) -> [events, value in cents] of the extra events sent
        self._extra_totals: dict[tuple[int, int, str], list[int]] = {}

    def stop(self) -> None:
        self._stop = True

    def _plan(self, test_id: str, probabilities: dict[str, float]) -> _TestPlan:
        test = self.config.test(test_id)
        names = test.variant_names
        return _TestPlan(
            test_id=test_id,
            assigner=VariantAssigner(test),
            probabilities=[probabilities[v] for v in names],
            exposure_parts=[_json_middle(test.exposure_event, test_id, v) for v in names],
            success_parts=[_json_middle(test.success_event, test_id, v) for v in names],
            exposure_event=test.exposure_event,
            success_event=test.success_event,
            # Successes must land inside the test's conversion window to count.
            max_delay_s=min(MAX_SUCCESS_DELAY_S, 0.5 * test.conversion_window.total_seconds()),
        )

    # ---- the run ----------------------------------------------------------------------------

    def run(self) -> TrafficSummary:
        kafka = self.config.infrastructure.kafka
        producer = make_producer(kafka.bootstrap_servers)
        check_topic(producer, kafka.bootstrap_servers, kafka.topic)
        self._producer, self._topic = producer, kafka.topic
        if self.spec.follow_allocation:
            self._follower = AllocationFollower(
                kafka.bootstrap_servers, self.config.allocation_topic
            )
            self._follower.start()
        spec = self.spec
        events_per_visit = sum(1.0 + float(np.mean(p.probabilities)) for p in self._plans)
        events_per_visit += spec.noise.malformed + spec.noise.orphan_click
        interval = events_per_visit / spec.eps if spec.eps else 0.0
        started = time.monotonic()
        start_ms = int(time.time() * 1000)
        last_progress = started
        visit = 0
        try:
            while not self._done(started):
                now = time.monotonic()
                due = visit * interval
                if spec.eps:
                    self._send_due_successes(due)
                    ahead = due - (now - started)
                    if ahead > 0:
                        time.sleep(ahead)
                        if self._done(started):
                            break
                event_ms = start_ms + int(due * 1000) if spec.eps else int(time.time() * 1000)
                self._visit(due, event_ms)
                visit += 1
                if now - last_progress >= PROGRESS_INTERVAL_S:
                    last_progress = now
                    self._progress(started)
                    producer.poll(0)
            self._drain_pending()
        except KeyboardInterrupt:
            self.summary.interrupted = True
        finally:
            self._pending.clear()  # not sent, so never counted
            flush(producer, self.summary.deliveries)
            if self._follower is not None:
                self._follower.stop()
            self.summary.expected_metrics = self._expected_metrics()
            self._progress(started)
        return self.summary

    def _room(self) -> int:
        """Messages that may still be sent (pending successes have their places reserved)."""
        return self._limit - self.summary.deliveries.produced - len(self._pending)

    def _done(self, started: float) -> bool:
        if self._stop or self._room() <= 0:
            return True
        duration = self.spec.duration_s
        return duration is not None and time.monotonic() - started >= duration

    def _progress(self, started: float) -> None:
        self.summary.elapsed_s = time.monotonic() - started
        if self._on_progress is not None:
            self._on_progress(self.summary)

    # ---- sending -----------------------------------------------------------------------------

    def _emit(
        self, payload: bytes, key: bytes | None, reserved: bool = False, event: bool = True
    ) -> bool:
        """Send one message unless the count is reached; an event may be delivered twice
        (noise)."""
        if not reserved and self._room() <= 0:
            return False
        produce(self._producer, self.summary.deliveries, self._topic, payload, key)
        duplicate = self.spec.noise.duplicate if event else 0.0
        if duplicate and self._random.uniform() < duplicate and self._room() > 0:
            produce(self._producer, self.summary.deliveries, self._topic, payload, key)
            self.summary.noise["duplicate deliveries"] += 1
        return True

    def _payload(self, middle: str, user_id: str, event_ms: int, value: str = "") -> bytes:
        self._event_seq += 1
        return (
            f'{{"event_id":"{self._run_id}-{self._event_seq}",{middle}'
            f'"user_id":"{user_id}","timestamp":"{self._timestamps(event_ms)}"{value}}}'
        ).encode()

    def _exposure(self, plan: _TestPlan, variant: int, user_id: str, event_ms: int) -> bool:
        extra = ""
        if self.spec.properties:
            extra = ',"properties":' + json.dumps(self._properties(user_id), sort_keys=True)
        payload = self._payload(plan.exposure_parts[variant], user_id, event_ms, extra)
        if not self._emit(payload, user_id.encode()):
            return False
        self.summary.events[(plan.test_id, plan.exposure_event, plan.assigner.names[variant])] += 1
        return True

    def _success_sent(self, pending: _PendingSuccess) -> None:
        """Book a success that went out: the event, and the user's first conversion."""
        plan = self._plans[pending.plan_index]
        name = plan.assigner.names[pending.variant]
        self.summary.events[(plan.test_id, plan.success_event, name)] += 1
        state = self._user_state[pending.plan_index]
        if state[pending.user_index] == _EXPOSED:
            state[pending.user_index] = _CONVERTED
            self.summary.converted_users[(plan.test_id, name)] += 1
            self._count_segments(plan.test_id, name, pending.user_index, "converted", 1)

    def _send_due_successes(self, due_s: float) -> None:
        while self._pending and self._pending[0].due_s <= due_s:
            pending = heapq.heappop(self._pending)
            self._emit(pending.payload, pending.key, reserved=True)
            self._success_sent(pending)

    def _drain_pending(self) -> None:
        """After the last visit, send the successes still waiting, at once: their timestamps
        already say when they happened, and the run ends on time."""
        while self._pending and not self._stop:
            self._send_due_successes(self._pending[0].due_s)

    # ---- one visit ---------------------------------------------------------------------------

    def _visit(self, due_s: float, event_ms: int) -> None:
        spec, random = self.spec, self._random
        user_index = self._pick_user()
        user_id = f"{self._user_prefix}{user_index}"
        for plan_index, plan in enumerate(self._plans):
            state = self._user_state[plan_index]
            if len(state) <= user_index:
                state.extend(bytes(user_index + 1 - len(state) + 4096))
            variant = self._variant(plan_index, plan, user_index, user_id, event_ms)
            cross = spec.noise.cross_variant
            if cross and state[user_index] != _UNSEEN and random.uniform() < cross:
                self._cross_variant(plan, plan_index, user_index, user_id, variant, event_ms)
                continue
            if not self._exposure(plan, variant, user_id, event_ms):
                return
            if state[user_index] == _UNSEEN:
                state[user_index] = _EXPOSED
                self.summary.exposed_users[(plan.test_id, plan.assigner.names[variant])] += 1
                name = plan.assigner.names[variant]
                self._count_segments(plan.test_id, name, user_index, "exposed", 1)
            chance = plan.probabilities[variant] * self._effect(user_id)
            if random.uniform() < chance and self._room() > 0:
                delay = min(random.exponential() * spec.mean_success_delay_s, plan.max_delay_s)
                pending = _PendingSuccess(
                    due_s + delay,
                    self._event_seq,
                    user_id.encode(),
                    self._payload(
                        plan.success_parts[variant], user_id, event_ms + int(delay * 1000)
                    ),
                    plan_index,
                    user_index,
                    variant,
                )
                if spec.eps:
                    heapq.heappush(self._pending, pending)
                elif self._emit(pending.payload, pending.key):
                    self._success_sent(pending)
            for extra in spec.extra_events:
                self._extra_event(plan, plan_index, user_index, user_id, variant, extra, event_ms)
        if spec.noise.orphan_click and random.uniform() < spec.noise.orphan_click:
            self._orphan_click(event_ms)
        if spec.noise.malformed and random.uniform() < spec.noise.malformed:
            self._malformed()

    def _extra_event(
        self,
        plan: _TestPlan,
        plan_index: int,
        user_index: int,
        user_id: str,
        variant: int,
        extra: ExtraEvent,
        event_ms: int,
    ) -> None:
        """Maybe send the extra event, at the exposure's moment (so it counts: t1 ≤ e)."""
        name = plan.assigner.names[variant]
        if self._random.uniform() >= extra.rates[name] or self._room() <= 0:
            return
        cents, value = 0, ""
        if extra.value_means is not None:
            mean = extra.value_means[name]
            draw = math.exp(math.log(mean) - 0.5 + self._random.normal())
            cents = max(1, round(draw * 100))
            value = f',"value":{cents // 100}.{cents % 100:02d}'
        middle = _json_middle(extra.event_type, plan.test_id, name)
        if self._emit(self._payload(middle, user_id, event_ms, value), user_id.encode()):
            self.summary.events[(plan.test_id, extra.event_type, name)] += 1
            totals = self._extra_totals.setdefault(
                (plan_index, user_index, extra.event_type), [0, 0]
            )
            totals[0] += 1
            totals[1] += cents

    def _expected_metrics(self) -> list[dict[str, object]]:
        """Per test, variant and metric beyond the conversion, what the pipeline must count:
        the users counted (exposed in one variant) and their totals (traffic_metrics)."""
        users: dict[tuple[int, int], dict[str, list[int]]] = {}
        for (plan_index, user_index, event_type), totals in self._extra_totals.items():
            if self._user_state[plan_index][user_index] in (_EXPOSED, _CONVERTED):
                users.setdefault((plan_index, user_index), {})[event_type] = totals
        rows = []
        for plan_index, plan in enumerate(self._plans):
            test = self.config.test(plan.test_id)
            mine = {u: t for (p, u), t in users.items() if p == plan_index}
            rows += expected_metric_sums(test, partial(self._variant_name, plan_index), mine)
        return rows

    def _variant_name(self, plan_index: int, user_index: int) -> str:
        """The variant a user was given (they must have been given one)."""
        index = self._user_variant[plan_index][user_index] - 1
        return self._plans[plan_index].assigner.names[index]

    def _variant(
        self, plan_index: int, plan: _TestPlan, user_index: int, user_id: str, event_ms: int
    ) -> int:
        """The user's variant: the one of their first visit, or for a new user the one the
        allocation in force at the event's moment gives (the configured split when not
        following, or before any version was published)."""
        remembered = self._user_variant[plan_index]
        if len(remembered) <= user_index:
            remembered.extend(bytes(user_index + 1 - len(remembered) + 4096))
        if remembered[user_index]:
            return remembered[user_index] - 1
        assigner = plan.assigner
        if self._follower is not None:
            version = self._follower.in_force(plan.test_id, from_microseconds(event_ms * 1000))
            if version is not None:
                assigner = self._assigner_of(plan, version, event_ms)
        index = assigner.variant_index(user_id)
        remembered[user_index] = index + 1
        return index

    def _assigner_of(
        self, plan: _TestPlan, version: AllocationVersion, event_ms: int
    ) -> VariantAssigner:
        key = (plan.test_id, version.version)
        if key not in self._assigners:
            self._assigners[key] = VariantAssigner(self.config.test(plan.test_id), version.weights)
            self.summary.allocations_used.append(
                {"test_id": plan.test_id, "version": version.version, "weights": version.weights,
                 "first_used_at": from_microseconds(event_ms * 1000).isoformat() + "Z"}
            )  # fmt: skip
        return self._assigners[key]

    def _properties(self, user_id: str) -> dict[str, str]:
        """The user's properties: each drawn once from its weights, by a hash of the user."""
        found = {}
        for spec in self.spec.properties:
            point = assignment_point(spec.name, user_id) * sum(spec.weights.values())
            for value, weight in spec.weights.items():
                found[spec.name] = value
                point -= weight
                if point < 0:
                    break
        return found

    def _effect(self, user_id: str) -> float:
        """The factor the user's segments put on their success probability."""
        factor = 1.0
        if self.spec.properties:
            for spec in self.spec.properties:
                factor *= spec.effects.get(self._properties(user_id)[spec.name], 1.0)
        return factor

    def _count_segments(
        self, test_id: str, variant: str, user_index: int, kind: str, change: int
    ) -> None:
        """Book a user's exposure or conversion in their segments (docs/segments.md)."""
        if self.spec.properties:
            user_id = f"{self._user_prefix}{user_index}"
            for name, value in self._properties(user_id).items():
                self.summary.segment_users[(test_id, name, value, variant, kind)] += change

    def _pick_user(self) -> int:
        spec = self.spec
        returning = (
            self._next_user > 0 and spec.repeat_rate and self._random.uniform() < spec.repeat_rate
        )
        exhausted = spec.users is not None and self._next_user >= spec.users
        if returning or exhausted:
            return self._random.below(self._next_user)
        self._next_user += 1
        return self._next_user - 1

    # ---- noise -------------------------------------------------------------------------------

    def _cross_variant(
        self,
        plan: _TestPlan,
        plan_index: int,
        user_index: int,
        user_id: str,
        variant: int,
        event_ms: int,
    ) -> None:
        other = (variant + 1) % len(plan.assigner.names)
        if not self._exposure(plan, other, user_id, event_ms):
            return
        state = self._user_state[plan_index]
        if state[user_index] in (_EXPOSED, _CONVERTED):
            # This user no longer counts: the pipeline excludes users seen in two variants.
            name = plan.assigner.names[variant]
            self.summary.exposed_users[(plan.test_id, name)] -= 1
            self._count_segments(plan.test_id, name, user_index, "exposed", -1)
            if state[user_index] == _CONVERTED:
                self.summary.converted_users[(plan.test_id, name)] -= 1
                self._count_segments(plan.test_id, name, user_index, "converted", -1)
            state[user_index] = _MIXED
            self.summary.noise["users in two variants"] += 1

    def _orphan_click(self, event_ms: int) -> None:
        plan = self._plans[self._random.below(len(self._plans))]
        user_id = f"{self._user_prefix}orphan-{self._event_seq}"
        variant = plan.assigner.variant_index(user_id)
        payload = self._payload(plan.success_parts[variant], user_id, event_ms)
        if self._emit(payload, user_id.encode()):
            self.summary.events[
                (plan.test_id, plan.success_event, plan.assigner.names[variant])
            ] += 1
            self.summary.noise["clicks without exposure"] += 1

    def _malformed(self) -> None:
        plan = self._plans[0]
        template = _MALFORMED[self._random.below(len(_MALFORMED))]
        payload = template.replace(b"%(test)s", plan.test_id.encode()).replace(
            b"%(variant)s", plan.assigner.names[0].encode()
        )
        if self._emit(payload, None, event=False):
            self.summary.noise["malformed messages"] += 1
