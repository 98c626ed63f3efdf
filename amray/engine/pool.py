"""The fleet of rollout engines (`EnginePool`): requests queued here and handed out as engines
have room (`rollout.dispatch`), faults handled so every request lands exactly once.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import ray

from amray.actors import call_all, fan_out, in_bundle, kill_all, placement, release
from amray.batch import Prompt, Sample
from amray.config import RolloutConfig
from amray.engine.actor import RolloutEngine, StaleWeights


POLL_S = 5.0
"""How long an engine's poll() waits for something to finish before it answers empty."""


@dataclass
class Request:
    """One sample to generate: the unit the fleet hands out, re-dispatches and accounts for."""

    prompt: Prompt
    group_id: str
    sample_index: int
    sampling: dict
    expected_tokens: float = 0.0
    """Prompt + predicted response tokens: the work balanced dispatch spreads evenly."""
    seed: int | None = None
    attempts: int = 0
    avoid: set[int] = field(default_factory=set)
    """Engines that failed this request (overdue, refused): tried again only if no other has room."""

    @property
    def key(self) -> tuple[str, int]:
        return self.group_id, self.sample_index


@dataclass
class _Slot:
    """One engine of the fleet and what it has in flight."""

    actor: object
    state: str = "ready"  # ready | starting | loading
    inflight: dict = field(default_factory=dict)  # dispatch id -> (Request, dispatch time)
    load: float = 0.0  # expected tokens in flight
    poll: object = None  # the outstanding poll() call: what finished since the last one
    pending: object = None  # a replacement's info() or load_weights() call
    busy_s: float = 0.0
    served: int = 0


class EnginePool:
    """The rollout engines used as one: requests are queued here and handed out as engines have
    room (`rollout.dispatch`), a dead or hung engine's requests go to the others while a
    replacement starts and loads the current weights, and every request lands exactly once.

        pool.submit(requests)
        while pool.busy:
            for request, sample in pool.step():   # samples as they land
                ...
    """

    def __init__(self, model_dir: str, cfg: RolloutConfig, weight_transfer: str = "",
                 placement_timeout_s: float = 900.0, wait: bool = True) -> None:
        """`wait=False` returns once the engines are starting; `wait_ready()` before first use
        (the cluster starts its learners and reward workers meanwhile)."""
        self.cfg, self.model_dir, self.weight_transfer = cfg, model_dir, weight_transfer
        # One bundle per engine (its tensor-parallel devices with it, so on one node), spread over nodes.
        self.group = placement({"CPU": cfg.num_cpus, "GPU": cfg.num_gpus, **cfg.resources}, cfg.num_engines,
                               "SPREAD", "rollout engines", placement_timeout_s)
        self.slots = [_Slot(self._start(i)) for i in range(cfg.num_engines)]
        self._booting = [s.actor.info.remote() for s in self.slots]
        self.backend, self.capacity = "", 0
        self.timeout_s = cfg.request_timeout_s or 120.0 + 0.5 * cfg.max_tokens
        self.version, self.weights_hash, self._weights = 0, "", None  # what every engine must serve
        self.queue: deque[Request] = deque()
        self.home: dict[str, int] = {}  # group -> engine its samples go to (prefix-cache reuse)
        self.restarts = 0
        self.expected_lengths: dict[str, float] = {}  # query id -> response tokens (difficulty ledger)
        self._lengths = [0.0, 0]  # running sum and count of response tokens
        self._rr = 0
        self._dispatched = 0  # dispatch ids: a re-dispatched request's late first answer is told apart
        self.timing = {"all_busy_s": 0.0, "tail_s": 0.0}
        self._tick = time.perf_counter()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every engine has loaded its model (an engine that failed to start raises)."""
        if self._booting:
            infos = ray.get(self._booting)
            self._booting = []
            self.backend = infos[0]["backend"]
            self.capacity = self.cfg.max_inflight or infos[0]["max_num_seqs"]

    def _start(self, index: int):
        opts = {"num_cpus": self.cfg.num_cpus, "num_gpus": self.cfg.num_gpus, "resources": self.cfg.resources,
                "max_concurrency": 100_000, **in_bundle(self.group, index)}  # a replacement reuses the bundle
        return RolloutEngine.options(**opts).remote(self.model_dir, self.cfg, self.weight_transfer, index)

    @property
    def actors(self) -> list:
        return [s.actor for s in self.slots]

    @property
    def ranks(self) -> int:
        """Devices serving the fleet (engines x tensor-parallel size): weight-transfer group members."""
        return len(self.slots) * self.cfg.tensor_parallel_size

    def sampling(self, temperature: float | None = None, top_p: float | None = None,
                 max_tokens: int | None = None) -> dict:
        c = self.cfg
        return {"temperature": c.temperature if temperature is None else temperature,
                "top_p": c.top_p if top_p is None else top_p,
                "max_tokens": c.max_tokens if max_tokens is None else max_tokens,
                "stop": list(c.stop) or None}

    # --- dispatch ---------------------------------------------------------------------------

    def predicted_tokens(self, prompt: Prompt) -> float:
        """Prompt + expected response tokens: the ledger's length for a known query, else the
        running mean of this run's responses (half the budget before any has landed)."""
        known = self.expected_lengths.get(str(prompt.row.get("id")))
        total, n = self._lengths
        mean = total / n if n else self.cfg.max_tokens / 2
        return len(prompt.token_ids) + (known if known is not None else mean)

    def submit(self, requests: list[Request]) -> None:
        if not self.busy:
            self._tick = time.perf_counter()  # idle time is nobody's busy time
        for r in requests:
            r.expected_tokens = r.expected_tokens or self.predicted_tokens(r.prompt)
        if self.cfg.longest_first:
            requests = sorted(requests, key=lambda r: -r.expected_tokens)  # stable: groups stay together
        self.queue.extend(requests)

    def run(self, requests: list[Request]) -> list[Sample]:
        """Submit `requests` and wait for all of them: their samples, in request order."""
        self.submit(requests)
        landed: dict[tuple[str, int], Sample] = {}
        while len(landed) < len(requests):
            landed.update({r.key: sample for r, sample in self.step()})
        return [landed[r.key] for r in requests]

    @property
    def busy(self) -> bool:
        return bool(self.queue) or any(s.inflight for s in self.slots)

    def _pick(self, request: Request) -> int | None:
        ready = [i for i, s in enumerate(self.slots) if s.state == "ready"]
        if not ready:
            return None
        if self.cfg.dispatch == "round_robin":  # bound in turn, whatever each engine has in flight
            self._rr += 1
            ready = [i for i in ready if i not in request.avoid] or ready
            return ready[self._rr % len(ready)]
        room = [i for i in ready if len(self.slots[i].inflight) < self.capacity]
        room = [i for i in room if i not in request.avoid] or room
        if not room:
            return None
        lightest = min(room, key=lambda i: self.slots[i].load)
        home = self.home.get(request.group_id)
        if home in room and self.slots[home].load <= self.slots[lightest].load + request.expected_tokens:
            return home
        return lightest

    def _dispatch(self) -> None:
        """Hand out queued requests, one `submit` call per engine for all it gets, and keep a
        `poll` outstanding on every engine with work in flight (two calls per engine per round
        rather than one per sample: Ray's per-call cost on the engine's process took CPU from
        generation, ~12% of a tiny model's rollout)."""
        batches: dict[int, list] = {}
        while self.queue:
            i = self._pick(self.queue[0])
            if i is None:
                break
            r = self.queue.popleft()
            slot = self.slots[i]
            self.home.setdefault(r.group_id, i)
            params = dict(r.sampling, seed=r.seed) if r.seed is not None else r.sampling
            self._dispatched += 1
            batches.setdefault(i, []).append(
                (self._dispatched, r.prompt.token_ids, params, r.group_id, r.sample_index, self.version))
            slot.inflight[self._dispatched] = (r, time.monotonic())
            slot.load += r.expected_tokens
        for i, batch in batches.items():
            self.slots[i].actor.submit.remote(batch)  # a dead engine fails its poll, handled there
        for slot in self.slots:
            if slot.inflight and slot.poll is None and slot.state == "ready":
                slot.poll = slot.actor.poll.remote(POLL_S)

    def step(self, timeout_s: float = 0.05) -> list[tuple[Request, Sample]]:
        """Hand out what fits, wait up to `timeout_s`, and return the samples that landed;
        engine deaths, refusals and overdue requests are handled on the way."""
        self._dispatch()
        self._account()
        refs = [s.poll for s in self.slots if s.poll is not None] + [s.pending for s in self.slots if s.pending]
        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:  # and whatever else is ready by now
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        landed = []
        for ref in ready:
            landed += self._collect(ref)
        self._overdue()
        self._dispatch()  # refill at once what just freed up
        self._account()
        return landed

    def _collect(self, ref) -> list[tuple[Request, Sample]]:
        for i, slot in enumerate(self.slots):
            if ref is slot.pending or ref == slot.pending:
                self._replacement_progress(i)
                return []
            if ref is slot.poll or ref == slot.poll:
                slot.poll = None
                try:
                    finished = ray.get(ref)
                except ray.exceptions.RayError as e:  # the engine died (or its process did)
                    self.engine_died(i, f"{type(e).__name__}")
                    return []
                landed = []
                for did, result in finished:
                    if did not in slot.inflight:
                        continue  # re-dispatched meanwhile (past its deadline): its late answer is dropped
                    request, _ = slot.inflight.pop(did)
                    slot.load -= request.expected_tokens
                    if isinstance(result, StaleWeights):  # its sync failed: it must not serve
                        self._requeue([request])
                        self.engine_died(i, str(result))
                        return landed
                    if isinstance(result, BaseException):
                        request.avoid.add(i)
                        self._retry(request, f"engine {i} failed it: {type(result).__name__}: {result}")
                        continue
                    slot.served += 1
                    self._lengths[0] += len(result.token_ids)
                    self._lengths[1] += 1
                    landed.append((request, result))
                return landed
        return []  # a poll of an engine since replaced

    def _retry(self, request: Request, why: str) -> None:
        request.attempts += 1
        if request.attempts > 3:
            raise RuntimeError(f"sample {request.sample_index} of group {request.group_id} failed {request.attempts} "
                               f"times; last: {why}")
        self._requeue([request])

    def _requeue(self, requests: list[Request]) -> None:
        self.queue.extendleft(reversed(requests))  # first in line, in their order

    def _overdue(self) -> None:
        now = time.monotonic()
        for i, slot in enumerate(self.slots):
            late = [did for did, (_, started) in slot.inflight.items() if now - started > self.timeout_s]
            if late:
                slot.actor.abort.remote(late)
            for did in late:
                request, _ = slot.inflight.pop(did)
                slot.load -= request.expected_tokens
                request.avoid.add(i)
                self._retry(request, f"no answer within rollout.request_timeout_s={self.timeout_s:g}s")

    def _account(self) -> None:
        """Engine time with work in flight; generation time with every engine busy vs a tail."""
        now = time.perf_counter()
        dt, self._tick = now - self._tick, now
        if not self.busy:
            return
        ready = [s for s in self.slots if s.state == "ready"]
        for s in ready:
            s.busy_s += dt if s.inflight else 0.0
        key = "all_busy_s" if ready and all(s.inflight for s in ready) else "tail_s"
        self.timing[key] += dt

    def stats(self) -> dict[str, float]:
        """Cumulative counters: busy seconds summed over engines, all-busy / tail seconds, restarts."""
        return {"engine_busy_s": sum(s.busy_s for s in self.slots), **self.timing,
                "engines": float(len(self.slots)), "restarts": float(self.restarts)}

    # --- faults -------------------------------------------------------------------------------

    def engine_died(self, index: int, why: str) -> None:
        """Re-queue what engine `index` had in flight and start a replacement, which loads the
        current weights (version and hash checked) before it gets any request."""
        if self.weight_transfer:
            raise RuntimeError(f"rollout engine {index} failed ({why}); with sync.backend={self.weight_transfer} a "
                               "replacement cannot join the weight-transfer group: resume from the last checkpoint")
        slot = self.slots[index]
        self._requeue([r for r, _ in slot.inflight.values()])
        ray.kill(slot.actor, no_restart=True)
        self.restarts += 1
        warnings.warn(f"rollout engine {index} failed ({why}); starting a replacement (restart {self.restarts})")
        self.slots[index] = _Slot(self._start(index), state="starting")
        self.slots[index].pending = self.slots[index].actor.info.remote()

    def _replacement_progress(self, index: int) -> None:
        slot = self.slots[index]
        try:
            result = ray.get(slot.pending)
        except ray.exceptions.RayError as e:
            if self.restarts > 3 * len(self.slots) + 3:
                raise RuntimeError(f"rollout engine {index} keeps failing ({e}); giving up") from e
            self.engine_died(index, f"replacement failed: {type(e).__name__}")
            return
        slot.pending = None
        loaded = result[0] if isinstance(result, tuple) else result.get("weight_version", 0)
        if self._weights is not None and loaded != self.version:  # started, or loaded an older sync
            slot.state, slot.pending = "loading", slot.actor.load_weights.remote(self.version, *self._weights)
            return
        slot.state = "ready"

    # --- weights ------------------------------------------------------------------------------

    def load_weights(self, parts: list[ray.ObjectRef], version: int, wait) -> None:
        """Object-store sync: every ready engine reloads from the same objects (the learner ranks'
        packed parts, one copy per node);
        `wait(refs, what)` bounds it (the transfer's deadline). An engine that dies or fails the
        hash check is replaced; the replacement loads these weights before it serves."""
        ready = [i for i, s in enumerate(self.slots) if s.state == "ready"]
        refs = [self.slots[i].actor.load_weights.remote(version, *parts) for i in ready]
        self.version, self._weights = version, list(parts)
        wait(refs, f"weight sync to version {version}", fetch=False)
        hashes = set()
        for i, ref in zip(ready, refs):
            try:
                got = ray.get(ref)
            except ray.exceptions.RayError as e:
                self.engine_died(i, f"weight sync failed: {str(e)[:300]}")
                continue
            hashes.add(got[1])
        if len(hashes) > 1:
            raise RuntimeError(f"engines loaded different weights for version {version}: {sorted(hashes)}")
        self.weights_hash = hashes.pop() if hashes else self.weights_hash

    def update_weight_version(self, version: int) -> list[ray.ObjectRef]:
        self.version = version
        return fan_out(self.actors, "update_weight_version", version)

    def weight_versions(self) -> list[int]:
        return call_all(self.actors, "weight_version")

    def sequence_logprobs(self, token_ids: list[int], start: int, temperature: float = 1.0) -> np.ndarray:
        return ray.get(self.slots[0].actor.sequence_logprobs.remote(token_ids, start, temperature))

    def shutdown(self) -> None:
        kill_all(self.actors, graceful="shutdown")
        release(self.group)
