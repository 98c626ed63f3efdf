"""Streamed rollouts: every sample is its own request of the engine fleet, handed out as engines
have room, and goes to the reward pool the moment it lands, while other samples are still
generating (a group's samples handed out together to one engine run as one vLLM request of n and
land together); a group is complete (and can be trained on) once its last sample is scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import ray

from amray.batch import Group, Prompt, Rollout, Sample
from amray.engine import EnginePool, Request
from amray.rewards.pool import RewardPool


def group_ids(prompts: list[Prompt], prefix: str = "") -> list[str]:
    """One id per prompt of a step: its position and row id (a prompt drawn twice is two groups)."""
    return [f"{prefix}{i}:{p.row.get('id', '')}" for i, p in enumerate(prompts)]


def requests_for(prompts: list[Prompt], n: int, sampling: dict, seed: int | None = None,
                 prefix: str = "") -> list[Request]:
    """n requests per prompt. `seed` seeds each request (seed + its index); leave it None in
    training: the engines are seeded at start (rollout.seed), and vLLM 0.32's CPU runner crashes
    ("CPU Generator does not use offset") when a per-request-seeded request is caught in a
    chunked prefill."""
    return [Request(p, gid, s, sampling, seed=None if seed is None else seed + k * n + s)
            for k, (gid, p) in enumerate(zip(group_ids(prompts, prefix), prompts)) for s in range(n)]


class Scoring:
    """Samples in, scored groups out: landed samples are sent to the reward pool at once, a group's
    samples that land together in one call (each row is still scored on its own), and a group is
    complete when its last sample is scored."""

    def __init__(self, rewards: RewardPool, requests: list[Request]) -> None:
        self.rewards = rewards
        self.size: dict[str, int] = {}
        self.prompts: dict[str, Prompt] = {}
        for r in requests:
            self.size[r.group_id] = self.size.get(r.group_id, 0) + 1
            self.prompts[r.group_id] = r.prompt
        self.pending: dict = {}  # reward ref -> its samples
        self.scored: dict[str, dict[int, tuple[Sample, dict]]] = {gid: {} for gid in self.size}
        self.groups: dict[str, Group] = {}
        self.total, self.landed = len(requests), 0
        self.seen: set[tuple[str, int]] = set()

    def add(self, samples: list[Sample]) -> None:
        fresh = []
        for sample in samples:
            if (sample.group_id, sample.sample_index) not in self.seen:  # every sample counts exactly once
                self.seen.add((sample.group_id, sample.sample_index))
                fresh.append(sample)
        if fresh:
            self.landed += len(fresh)
            rows = [dict(self.prompts[s.group_id].row, response=s.text) for s in fresh]
            self.pending[self.rewards.submit_many(rows)] = fresh

    def poll(self, timeout_s: float = 0.0) -> None:
        for ref, results in self.rewards.poll(list(self.pending), timeout_s):
            for sample, result in zip(self.pending.pop(ref), results, strict=True):
                done = self.scored[sample.group_id]
                done[sample.sample_index] = (sample, {"reward": result.reward, "info": result.info})
                if len(done) == self.size[sample.group_id]:
                    self._group(sample.group_id)

    def _group(self, gid: str) -> Group:
        done = self.scored[gid]
        samples = [done[i][0] for i in sorted(done)]
        results = [done[i][1] for i in sorted(done)]
        group = Group(gid, self.prompts[gid], samples, np.array([r["reward"] for r in results], dtype=np.float32),
                      [r["info"] for r in results])
        self.groups[gid] = group
        return group

    @property
    def complete(self) -> bool:
        return len(self.groups) == len(self.size)

    @property
    def generated(self) -> bool:
        """Every sample landed (some may still be scoring)."""
        return self.landed == self.total


class RolloutStream:
    """Rollouts of one or more steps in flight on one fleet: each is launched (its requests queued
    on the engines) and later collected; while one is collected, samples of the others land and
    are scored too (the asynchronous mode launches the next steps before the current one trains)."""

    def __init__(self, engines: EnginePool, rewards: RewardPool) -> None:
        self.engines, self.rewards = engines, rewards
        self.scorings: dict[str, Scoring] = {}
        self.owner: dict[str, Scoring] = {}  # group id -> its rollout's scoring
        self.started: dict[str, tuple[float, dict[str, float]]] = {}

    def launch(self, key: str, prompts: list[Prompt], n: int, sampling: dict, seed: int | None = None) -> None:
        requests = requests_for(prompts, n, sampling, seed, prefix=f"{key}/" if key else "")
        scoring = Scoring(self.rewards, requests)
        self.scorings[key] = scoring
        self.owner.update({gid: scoring for gid in scoring.size})
        self.started[key] = (time.perf_counter(), self.engines.stats())
        self.engines.submit(requests)

    def launched(self, key: str) -> bool:
        return key in self.scorings

    def groups(self, key: str) -> int:
        """How many groups rollout `key` has (one per prompt)."""
        return len(self.scorings[key].size)

    def collect(self, key: str, on_samples: Callable[[int], None] | None = None,
                on_group: Callable[[Group], None] | None = None) -> Rollout:
        """Run the fleet until every group of rollout `key` is scored; its Rollout. `on_group` gets
        each of its groups once it is complete (those completed earlier first)."""
        scoring = self.scorings[key]
        t0, before = self.started[key]
        generate_s = None
        delivered: set[str] = set()

        def deliver() -> None:
            for gid in [g for g in scoring.groups if g not in delivered]:
                delivered.add(gid)
                if on_group is not None:
                    on_group(scoring.groups[gid])

        deliver()
        while not scoring.complete:
            if not scoring.generated:
                landed = self.engines.step(0.02 if self._scoring_pending() else 0.05)
                self._score([sample for _, sample in landed])
                if on_samples is not None and landed:
                    on_samples(sum(1 for _, x in landed if self.owner[x.group_id] is scoring))
            elif generate_s is None:
                generate_s = time.perf_counter() - t0
            for other in self.scorings.values():
                other.poll(0.5 if scoring.generated and other is scoring else 0.0)
            deliver()
        generate_s = generate_s if generate_s is not None else time.perf_counter() - t0
        del self.scorings[key]
        for gid in scoring.size:
            del self.owner[gid]
        rollout = Rollout([scoring.groups[gid] for gid in scoring.size], generate_s,
                          time.perf_counter() - t0 - generate_s)
        rollout.stats = fleet_stats(before, self.engines.stats(), time.perf_counter() - t0)
        return rollout

    def run_while(self, refs: list) -> None:
        """Keep the fleet and the scoring of launched rollouts going until `refs` are ready (the
        asynchronous mode's engines generate while the learners train)."""
        while len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):
            if not self.engines.busy:
                ray.wait(refs, num_returns=len(refs))
                return
            self._score([sample for _, sample in self.engines.step(0.05)])
            for scoring in self.scorings.values():
                scoring.poll(0.0)

    def _score(self, samples: list[Sample]) -> None:
        """Landed samples to their rollout's scoring: one reward call per group (its samples land
        together when they ran as one request of n). Never one call for several groups: a batch
        resolves as a whole, and a slow row (a sandboxed test run) would hold back the others'
        groups, while a group waits for its last row anyway."""
        by_group: dict[str, list[Sample]] = {}
        for sample in samples:
            by_group.setdefault(sample.group_id, []).append(sample)
        for gid, batch in by_group.items():
            self.owner[gid].add(batch)

    def _scoring_pending(self) -> bool:
        return any(s.pending for s in self.scorings.values())


def generate_and_score(engines: EnginePool, rewards: RewardPool, prompts: list[Prompt], n: int,
                       sampling: dict, seed: int | None = None,
                       on_samples: Callable[[int], None] | None = None,
                       on_group: Callable[[Group], None] | None = None) -> Rollout:
    """n samples per prompt, one group per prompt, each sample scored as soon as it lands.
    `on_samples(count)` is told how many landed each time some do (a progress bar); `on_group`
    gets each group the moment its last sample is scored (streamed training)."""
    stream = RolloutStream(engines, rewards)
    stream.launch("", prompts, n, sampling, seed)
    return stream.collect("", on_samples, on_group)


def fleet_stats(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Per-step view of the fleet's cumulative counters."""
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    return {"time/generate_all_busy_s": d["all_busy_s"], "time/generate_tail_s": d["tail_s"],
            "rollout/engine_utilization": d["engine_busy_s"] / max(after["engines"] * wall_s, 1e-9),
            "fault/engine_restarts": after["restarts"]}
