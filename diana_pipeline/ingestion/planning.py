"""What the Kafka sensor asks for: the new offsets of each partition, cut into runs of at most
a micro-batch each, and the run key that makes each request unique."""

from __future__ import annotations

import json

from diana_pipeline.store import OffsetRange


def read_cursor(text: str | None, topic: str) -> dict[int, int]:
    """The sensor's next offset per partition of `topic`. A cursor kept for another topic
    (experiments.yaml now names another one) says nothing about this one: its offsets would
    skip this topic's first messages. A cursor from before the topic was kept in it
    ({partition: offset}) is taken to be this topic's."""
    data = json.loads(text or "{}")
    if "topic" in data:
        return {int(p): o for p, o in data["next"].items()} if data["topic"] == topic else {}
    return {int(p): o for p, o in data.items()}


def write_cursor(topic: str, next_offsets: dict[int, int]) -> str:
    return json.dumps(
        {"topic": topic, "next": {str(p): o for p, o in sorted(next_offsets.items())}}
    )


def plan_runs(
    marks: dict[int, tuple[int, int]], cursor: dict[int, int], max_batch: int, max_runs: int
) -> tuple[list[list[OffsetRange]], dict[int, int]]:
    """Split the offsets between the cursor and the end of each partition into runs of at
    most `max_batch` messages. Returns the runs and the cursor after them. A partition the
    cursor has never seen starts at its low watermark (everything Kafka still holds)."""
    position = {p: cursor.get(p, low) for p, (low, _) in marks.items()}
    runs: list[list[OffsetRange]] = []
    current: list[OffsetRange] = []
    room = max_batch
    for partition, (_, high) in sorted(marks.items()):
        while position[partition] < high:
            if len(runs) == max_runs:
                return runs, {**cursor, **position}
            take = min(high - position[partition], room)
            current.append(OffsetRange(partition, position[partition], position[partition] + take))
            position[partition] += take
            room -= take
            if room == 0:
                runs.append(current)
                current, room = [], max_batch
    if current and len(runs) < max_runs:
        runs.append(current)
    return runs, {**cursor, **position}


def partition_groups(
    marks: dict[int, tuple[int, int]], groups: int
) -> dict[int, dict[int, tuple[int, int]]]:
    """The partitions (with their watermarks) of each of `groups` groups: partition % groups.
    Parallel runs each take one group's offsets, so that no two runs share a partition."""
    grouped: dict[int, dict[int, tuple[int, int]]] = {group: {} for group in range(groups)}
    for partition, mark in marks.items():
        grouped[partition % groups][partition] = mark
    return grouped


def run_key(topic: str, ranges: list[OffsetRange]) -> str:
    return f"{topic}/" + ",".join(str(r) for r in ranges)
