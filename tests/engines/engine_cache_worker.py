"""A process that builds an engine-cache entry with a slow fake builder (for the concurrency test).

Kept apart from the test module so that a spawned child imports only ``engines.engine_cache``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from engines.engine_cache import load_or_build

PAYLOAD = b"plan:" + bytes(range(256)) * 64


def build_entry(folder: str, fields: dict, builds_log: str, barrier, result: str) -> None:
    def build() -> bytes:
        with open(builds_log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other process to reach the lock
        return PAYLOAD

    barrier.wait()
    payload, built = load_or_build(Path(folder), fields, build)
    Path(result).write_bytes((b"built:" if built else b"loaded:") + payload)
