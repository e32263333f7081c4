"""The local stack's place for published allocations: `allocations.json` in the CSV folder,
each test's latest version (allocations.py), rewritten atomically so that a client reading it
never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from diana_pipeline.allocations import AllocationError, AllocationVersion

FILE_NAME = "allocations.json"


class AllocationFile:
    """allocations.json in one folder: {test_id: version}."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME

    def write(self, versions: list[AllocationVersion]) -> Path:
        """Merge the versions in (a test keeps its highest version) and replace the file."""
        latest = self.read()
        for version in versions:
            known = latest.get(version.test_id)
            if known is None or version.version >= known.version:
                latest[version.test_id] = version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {test: json.loads(v.to_json()) for test, v in sorted(latest.items())}, indent=2
        )
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text + "\n")
        partial.replace(self.path)
        return self.path

    def read(self) -> dict[str, AllocationVersion]:
        """Each test's latest version (nothing when the file is missing)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise AllocationError(f"{self.path}: not JSON ({exc})") from None
        return {test: AllocationVersion.from_json(json.dumps(item)) for test, item in data.items()}
