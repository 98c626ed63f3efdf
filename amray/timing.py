"""Phase timers: each phase of a step records its own seconds (`time/<phase>_s`).

    timer = PhaseTimer()
    with timer("generate"):
        rollout = ...
    metrics.update(timer.seconds)        # {"time/generate_s": 12.3, ...}
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    def __init__(self, prefix: str = "time/") -> None:
        self.prefix = prefix
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the block; a phase entered twice adds up."""
        key = f"{self.prefix}{phase}_s"
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
