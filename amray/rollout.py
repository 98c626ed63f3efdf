"""Streamed rollouts: every sample is its own engine request and goes to the reward pool the
moment it finishes, while the other samples are still generating.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import ray

from amray.batch import Group, Prompt, Rollout, Sample
from amray.engine import EnginePool
from amray.rewards.pool import RewardPool


def group_ids(prompts: list[Prompt]) -> list[str]:
    """One id per prompt of a step: its position and row id (a prompt drawn twice is two groups)."""
    return [f"{i}:{p.row.get('id', '')}" for i, p in enumerate(prompts)]


def generate_and_score(engines: EnginePool, rewards: RewardPool, prompts: list[Prompt], n: int,
                       sampling: dict, seed: int | None = None,
                       on_samples: Callable[[int], None] | None = None) -> Rollout:
    """n samples per prompt, one group per prompt; each sample is scored as soon as it lands
    (`on_samples(count)` is told how many landed each time some do: a progress bar).

    `seed` seeds each request (seed + its index). Leave it None in training: the engines are
    seeded at start (rollout.seed), and vLLM 0.32's CPU runner crashes ("CPU Generator does not
    use offset") when a per-request-seeded request is caught in a chunked prefill."""
    t0 = time.perf_counter()
    ids = group_ids(prompts)
    by_id = dict(zip(ids, prompts))
    pending: dict[ray.ObjectRef, tuple[str, int]] = {}
    for k, (gid, prompt) in enumerate(zip(ids, prompts)):
        for s_idx in range(n):
            s = None if seed is None else seed + k * n + s_idx
            pending[engines.submit(prompt, gid, s_idx, sampling, s)] = (gid, s_idx)
    landed: dict[str, dict[int, tuple[Sample, ray.ObjectRef]]] = {gid: {} for gid in ids}
    waiting = list(pending)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0.05, fetch_local=True)
        if not done:
            done, waiting = ray.wait(waiting, num_returns=1)
        for ref, sample in zip(done, ray.get(done)):
            gid, s_idx = pending[ref]
            reward = rewards.submit(dict(by_id[gid].row, response=sample.text))
            landed[gid][s_idx] = (sample, reward)
        if on_samples is not None:
            on_samples(len(done))
    generate_s = time.perf_counter() - t0
    groups = []
    for gid in ids:
        samples = [landed[gid][s][0] for s in range(n)]
        results = ray.get([landed[gid][s][1] for s in range(n)])
        groups.append(Group(gid, by_id[gid], samples, np.array([r["reward"] for r in results], dtype=np.float32),
                            [r["info"] for r in results]))
    return Rollout(groups, generate_s, time.perf_counter() - t0 - generate_s)
