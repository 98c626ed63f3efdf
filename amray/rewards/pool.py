"""Reward workers as Ray actors, and the pool the GRPO driver sends finished samples to.

    pool = RewardPool(cfg.reward)
    ref = pool.submit(row)            # the moment a sample finishes generating
    ...
    result = RewardResult.from_dict(ray.get(ref))
    pool.shutdown()

Each worker scores one row at a time, and every row is time-bounded (config.timeout_s). Rows are
not pushed onto a worker's queue (they could wait behind a hung row): a small async router actor
hands each row, in arrival order, to the next worker that is free, so a hung row holds one worker
for at most its bound while the others keep going.
"""

from __future__ import annotations

import asyncio
import threading

import ray

from amray.rewards import score_row
from amray.rewards.config import RewardConfig
from amray.rewards.types import RewardResult

_WARMUP_ROW = {"id": "warmup", "source": "math", "response": "\\boxed{1}", "answer": "1"}


@ray.remote(num_cpus=0.1, max_restarts=3)
class RewardWorker:
    """One reward worker: holds its own child processes (math, ifeval) and reward model."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config

    def score(self, row: dict) -> dict:
        """RewardResult of one row as {"reward", "info"} (plain data for the object store)."""
        return score_row(row, self.config).to_dict()

    def warmup(self) -> bool:
        """Start the math child now rather than on the first real row."""
        return score_row(_WARMUP_ROW, self.config).reward == 1.0


@ray.remote(num_cpus=0)
class RewardRouter:
    """Gives each row to the next free worker (FIFO); async, so rows wait here, not on a worker."""

    def __init__(self, workers: list) -> None:
        self.idle: asyncio.Queue = asyncio.Queue()
        for worker in workers:
            self.idle.put_nowait(worker)

    async def score(self, row: dict) -> dict:
        worker = await self.idle.get()
        try:
            return await worker.score.remote(row)
        except ray.exceptions.RayError as e:  # the worker died (Ray restarts it); this row scores 0
            return RewardResult.failed(f"reward worker failed: {type(e).__name__}: {str(e)[:500]}").to_dict()
        finally:
            self.idle.put_nowait(worker)


class RewardPool:
    """`config.num_workers` RewardWorker actors, created on first use; thread-safe."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        if self.config.num_workers < 1:
            raise ValueError(f"reward.num_workers must be >= 1, got {self.config.num_workers}")
        self._workers: list = []
        self._router = None
        self._lock = threading.Lock()

    def submit(self, row: dict) -> ray.ObjectRef:
        """Queue one row for the next free worker; the ref resolves to {"reward", "info"}."""
        with self._lock:
            self._start()
            return self._router.score.remote(row)

    def score_many(self, rows: list[dict]) -> list[RewardResult]:
        """Score rows concurrently; results in input order. A worker crash scores its rows 0."""
        return [self.result(ref) for ref in [self.submit(row) for row in rows]]

    @staticmethod
    def result(ref: ray.ObjectRef) -> RewardResult:
        """Wait for one submitted row (a dead worker gives reward 0 with the error)."""
        try:
            return RewardResult.from_dict(ray.get(ref))
        except ray.exceptions.RayError as e:
            return RewardResult.failed(f"reward worker failed: {type(e).__name__}: {str(e)[:500]}")

    def warmup(self) -> None:
        """Create the workers and their math children up front (first rows are then fast)."""
        with self._lock:
            self._start()
            workers = list(self._workers)
        ray.get([w.warmup.remote() for w in workers])

    def shutdown(self) -> None:
        with self._lock:
            for actor in [*self._workers, *([self._router] if self._router else [])]:
                ray.kill(actor)
            self._workers, self._router = [], None

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _start(self) -> None:
        if self._workers:
            return
        options = RewardWorker.options(num_cpus=self.config.worker_num_cpus)
        self._workers = [options.remote(self.config) for _ in range(self.config.num_workers)]
        self._router = RewardRouter.remote(self._workers)
