"""Reward workers as Ray actors, and the pool the GRPO driver sends finished samples to.

    pool = RewardPool(cfg.reward)
    ref = pool.submit(row)            # the moment a sample finishes generating
    ref = pool.submit_many(rows)      # or the samples that landed together, in one call
    ...
    result = pool.result(ref)         # a RewardResult (a list for submit_many); pool.poll(refs)
                                      # for those ready
    pool.shutdown()

Each worker scores one row at a time, and every row is time-bounded (config.timeout_s). Rows are
not pushed onto a worker's queue (they could wait behind a hung row): a small async router actor
hands each row, in arrival order, to the next worker that is free, so a hung row holds one worker
for at most its bound while the others keep going.

Faults: a row whose worker dies, or does not answer within its bound plus a grace, is scored again
on another worker (up to `reward.max_tries` tries; then reward 0 with the error in its info) and
the worker is replaced by a fresh one — never put back to draw more rows. The router itself is
supervised by the pool: if it dies, a new one (with new workers) takes over and the rows it held
are submitted again. A row's `info.tries` counts its attempts (`fault/reward_retries`).
"""

from __future__ import annotations

import asyncio
import threading

import ray

from amray.rewards import score_row
from amray.rewards.config import RewardConfig
from amray.rewards.types import RewardResult

Scored = RewardResult | list[RewardResult]  # what a submission resolves to: one row's, or a batch's
_WARMUP_ROW = {"id": "warmup", "source": "math", "response": "\\boxed{1}", "answer": "1"}


@ray.remote(num_cpus=0.1)
class RewardWorker:
    """One reward worker: holds its own child processes (math, ifeval) and reward model."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config

    def score(self, row: dict) -> dict:
        """RewardResult of one row as {"reward", "info"} (plain data for the object store)."""
        return score_row(row, self.config).to_dict()

    def warmup(self) -> bool:
        """Start the math child (and a custom reward's) now rather than on the first real row."""
        if self.config.custom:
            from amray.rewards.isolation import shared_worker

            shared_worker("custom").call("amray.rewards.custom:check_spec", (self.config.custom,), 60.0)
        return score_row(_WARMUP_ROW, self.config).reward == 1.0

    def pid(self) -> int:
        import os

        return os.getpid()

    def register(self, name: str, pickled: bytes) -> None:
        from amray.rewards.custom import register

        register(name, pickled)


@ray.remote(num_cpus=0)
class RewardRouter:
    """Owns the workers; gives each row to the next free one (FIFO). Async, so rows wait here."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        self.options = RewardWorker.options(num_cpus=config.worker_num_cpus)
        self.workers = [self.options.remote(config) for _ in range(config.num_workers)]
        self.idle: asyncio.Queue = asyncio.Queue()
        for worker in self.workers:
            self.idle.put_nowait(worker)
        self.replaced = 0
        self.registered: dict[str, bytes] = {}

    async def register(self, name: str, pickled: bytes) -> None:
        """A reward function registered from Python: every worker (and every replacement) gets it."""
        self.registered[name] = pickled
        await asyncio.gather(*[w.register.remote(name, pickled) for w in self.workers])

    async def score_many(self, rows: list[dict]) -> list[dict]:
        """Rows sent in one call (those that landed together): each still goes to the next free
        worker on its own, bounded and retried as in `score`; the results in input order."""
        return list(await asyncio.gather(*[self.score(row) for row in rows]))

    async def score(self, row: dict) -> dict:
        bound = self.config.timeout_s + self.config.hang_grace_s
        errors = []
        for attempt in range(1, self.config.max_tries + 1):
            worker = await self.idle.get()
            try:
                result = await asyncio.wait_for(worker.score.remote(row), timeout=bound)
            except (ray.exceptions.RayError, asyncio.TimeoutError) as e:
                what = "no answer within " + f"{bound:.0f}s" if isinstance(e, asyncio.TimeoutError) else type(e).__name__
                errors.append(f"try {attempt}: reward worker failed ({what})")
                worker = self._replace(worker)
                continue
            finally:
                self.idle.put_nowait(worker)
            result["info"]["tries"] = attempt
            return result
        return RewardResult.failed("; ".join(errors)[-1000:], tries=self.config.max_tries).to_dict()

    def _replace(self, worker):
        """A dead or hung worker never draws another row: kill it, start a fresh one."""
        ray.kill(worker, no_restart=True)
        fresh = self.options.remote(self.config)
        for name, pickled in self.registered.items():
            fresh.register.remote(name, pickled)  # queued before any row it will score
        self.workers[self.workers.index(worker)] = fresh
        self.replaced += 1
        return fresh

    async def warmup(self) -> list[bool]:
        return await asyncio.gather(*[w.warmup.remote() for w in self.workers])

    def worker_handles(self) -> list:
        return list(self.workers)

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)


class RewardPool:
    """`config.num_workers` RewardWorker actors behind a router, created on first use; thread-safe."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        if self.config.num_workers < 1:
            raise ValueError(f"reward.num_workers must be >= 1, got {self.config.num_workers}")
        self._router = None
        self._lock = threading.Lock()
        self._rows: dict[ray.ObjectRef, dict | list[dict]] = {}  # in flight: the row(s) behind each ref
        self._alias: dict[ray.ObjectRef, ray.ObjectRef] = {}  # a ref -> the ref of its resubmission
        self._registered: dict[str, bytes] = {}  # reward functions registered from Python
        self.router_restarts = 0

    def submit(self, row: dict) -> ray.ObjectRef:
        """Queue one row for the next free worker; the ref resolves to {"reward", "info"}."""
        return self._submit(row)

    def submit_many(self, rows: list[dict]) -> ray.ObjectRef:
        """Queue rows in one call to the router (each is still scored on its own, by the next free
        worker); the ref resolves to their results in order. One call instead of one per row
        spares the driver, the router and Ray's daemons a few milliseconds of CPU per row."""
        return self._submit(list(rows))

    def _submit(self, payload: dict | list[dict]) -> ray.ObjectRef:
        with self._lock:
            self._start()
            ref = self._send(payload)
            self._rows[ref] = payload
            return ref

    def _send(self, payload: dict | list[dict]) -> ray.ObjectRef:
        if isinstance(payload, list):
            return self._router.score_many.remote(payload)
        return self._router.score.remote(payload)

    def result(self, ref: ray.ObjectRef, timeout_s: float | None = None) -> Scored:
        """Wait for one submission (a router that died meanwhile is replaced and the row(s) sent
        again): a RewardResult, or for `submit_many` a list of them in order."""
        while True:
            current = self._current(ref)
            try:
                value = ray.get(current, timeout=timeout_s)
            except ray.exceptions.RayActorError:
                self._router_died(current)
                continue
            self._done(ref, current)
            if isinstance(value, list):
                return [RewardResult.from_dict(v) for v in value]
            return RewardResult.from_dict(value)

    def poll(self, refs: list[ray.ObjectRef], timeout_s: float = 0.0) -> list[tuple[ray.ObjectRef, Scored]]:
        """The submissions among `refs` that are scored now (waiting up to `timeout_s` for one),
        each with what `result` gives for it."""
        if not refs:
            return []
        current = {self._current(r): r for r in refs}
        ready, _ = ray.wait(list(current), num_returns=len(current), timeout=timeout_s)
        return [(current[c], self.result(current[c])) for c in ready]

    def score_many(self, rows: list[dict]) -> list[RewardResult]:
        """Score rows concurrently; results in input order."""
        return self.result(self.submit_many(rows)) if rows else []

    def warmup(self) -> None:
        """Create the workers and their math children up front (first rows are then fast)."""
        with self._lock:
            self._start()
            router = self._router
        ray.get(router.warmup.remote())

    def register(self, name: str, fn) -> None:
        """Score rows of source `name` with `fn(row, response)` (a float, or a float and an info
        dict), e.g. defined in a notebook cell; it runs time-bounded in the reward workers."""
        import cloudpickle

        from amray.rewards import SOURCES

        if name in SOURCES:
            raise ValueError(f"{name!r} is a built-in source; register a custom reward under another name")
        pickled = cloudpickle.dumps(fn)
        with self._lock:
            self._start()
            self._registered[name] = pickled
            router = self._router
        ray.get(router.register.remote(name, pickled))

    def workers(self) -> list:
        """The worker actors (tests kill them to show the faults are handled)."""
        with self._lock:
            self._start()
            return ray.get(self._router.worker_handles.remote())

    def shutdown(self) -> None:
        with self._lock:
            if self._router is not None:
                try:
                    ray.get(self._router.shutdown.remote(), timeout=10)
                except ray.exceptions.RayError:
                    pass
                ray.kill(self._router)
            self._router = None
            self._rows.clear()
            self._alias.clear()

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _start(self) -> None:
        if self._router is None:
            self._router = RewardRouter.remote(self.config)

    def _current(self, ref: ray.ObjectRef) -> ray.ObjectRef:
        while ref in self._alias:
            ref = self._alias[ref]
        return ref

    def _done(self, original: ray.ObjectRef, current: ray.ObjectRef) -> None:
        with self._lock:
            ref = original
            while ref in self._alias:
                ref = self._alias.pop(ref)
            self._rows.pop(current, None)
            self._rows.pop(original, None)

    def _router_died(self, failed: ray.ObjectRef) -> None:
        """A new router (and workers) takes over; every row the old one held is sent again."""
        with self._lock:
            if failed in self._alias:  # another waiter already replaced it
                return
            old = self._router
            if old is not None:
                ray.kill(old)  # its workers go with it (Ray ends actors whose owner died)
            self._router = RewardRouter.remote(self.config)
            for name, pickled in self._registered.items():
                self._router.register.remote(name, pickled)
            self.router_restarts += 1
            for ref, payload in list(self._rows.items()):
                if ref in self._alias:
                    continue
                new = self._send(payload)
                self._alias[ref] = new
                self._rows[new] = self._rows.pop(ref)
