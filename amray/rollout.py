"""Streamed rollouts: every sample is its own engine request and goes to the reward pool the
moment it finishes, while the other samples are still generating.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray

from amray.config import RolloutConfig
from amray.engine import RolloutEngine, Sample
from amray.learner import TrainBatch
from amray.rewards.pool import RewardPool
from amray.weight_sync import WeightSyncTimeout


@dataclass
class Prompt:
    """A task row plus its tokenized chat prompt. `row` carries `source` and ground truth."""

    row: dict
    token_ids: list[int]


@dataclass
class Rollout:
    """Samples of a step, laid out group by group (prompt 0's n samples first)."""

    prompts: list[Prompt]
    samples: list[Sample]
    rewards: np.ndarray
    reward_infos: list[dict]
    generate_s: float
    reward_wait_s: float

    @property
    def truncated(self) -> np.ndarray:
        return np.array([s.truncated for s in self.samples])

    @property
    def response_lengths(self) -> np.ndarray:
        return np.array([len(s.token_ids) for s in self.samples])

    def train_batch(self, advantages: np.ndarray) -> TrainBatch:
        tokens, masks, logprobs = [], [], []
        for s in self.samples:
            p = self.prompts[s.prompt_index].token_ids
            tokens.append(np.concatenate([np.asarray(p, dtype=np.int64), s.token_ids]))
            masks.append(np.concatenate([np.zeros(len(p), np.float32), np.ones(len(s.token_ids), np.float32)]))
            logprobs.append(np.concatenate([np.zeros(len(p), np.float32), s.logprobs]))
        return TrainBatch(tokens, masks, advantages.astype(np.float32), logprobs)


class EnginePool:
    """The rollout engine actors, used as one."""

    def __init__(self, model_dir: str, cfg: RolloutConfig, weight_transfer: str = "") -> None:
        self.cfg = cfg
        opts = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus, "max_concurrency": 100_000}
        self.engines = [RolloutEngine.options(**opts).remote(model_dir, cfg, weight_transfer, i)
                        for i in range(cfg.num_engines)]
        self.backend = ray.get(self.engines[0].info.remote())["backend"]
        self._next = 0

    def sampling(self, temperature: float | None = None, top_p: float | None = None,
                 max_tokens: int | None = None) -> dict:
        c = self.cfg
        return {"temperature": c.temperature if temperature is None else temperature,
                "top_p": c.top_p if top_p is None else top_p,
                "max_tokens": c.max_tokens if max_tokens is None else max_tokens,
                "stop": list(c.stop) or None}

    def submit(self, prompt: Prompt, prompt_index: int, sample_index: int, sampling: dict, seed: int | None) -> ray.ObjectRef:
        engine = self.engines[self._next % len(self.engines)]
        self._next += 1
        params = dict(sampling, seed=seed) if seed is not None else sampling
        return engine.generate.remote(prompt.token_ids, params, prompt_index, sample_index)

    def load_weights(self, packed_ref: ray.ObjectRef, version: int, timeout_s: float) -> None:
        """Object-store sync: every engine reloads from the same object (one copy per node)."""
        refs = [e.load_weights.remote(packed_ref, version) for e in self.engines]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if pending:
            raise WeightSyncTimeout(f"weight sync to version {version} did not finish within "
                                    f"{timeout_s:.0f}s ({len(pending)} of {len(refs)} engines pending); "
                                    "raise sync.timeout_s for big models")
        versions = ray.get(ready)
        if any(v != version for v in versions):
            raise RuntimeError(f"engines report weight versions {versions}, expected {version}")

    def weight_versions(self) -> list[int]:
        return ray.get([e.weight_version.remote() for e in self.engines])

    def sequence_logprobs(self, token_ids: list[int], start: int, temperature: float = 1.0) -> np.ndarray:
        return ray.get(self.engines[0].sequence_logprobs.remote(token_ids, start, temperature))

    def shutdown(self) -> None:
        for e in self.engines:
            try:
                ray.get(e.shutdown.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - best effort; the actor is killed next
                pass
            ray.kill(e)


def generate_and_score(engines: EnginePool, rewards: RewardPool, prompts: list[Prompt], n: int,
                       sampling: dict, seed: int | None = None,
                       on_samples: Callable[[int], None] | None = None) -> Rollout:
    """n samples per prompt; each sample is scored as soon as it lands (`on_samples(count)` is
    told how many landed each time some do: a progress bar for long evaluations).

    `seed` seeds each request (seed + its index). Leave it None in training: the engines are
    seeded at start (rollout.seed), and vLLM 0.32's CPU runner crashes ("CPU Generator does not
    use offset") when a per-request-seeded request is caught in a chunked prefill."""
    t0 = time.perf_counter()
    pending = {}
    for p_idx, prompt in enumerate(prompts):
        for s_idx in range(n):
            s = None if seed is None else seed + p_idx * n + s_idx
            pending[engines.submit(prompt, p_idx, s_idx, sampling, s)] = (p_idx, s_idx)
    samples: list[Sample | None] = [None] * (len(prompts) * n)
    reward_refs: list[ray.ObjectRef | None] = [None] * len(samples)
    waiting = list(pending)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=0.05, fetch_local=True)
        if not done:
            done, waiting = ray.wait(waiting, num_returns=1)
        for ref, sample in zip(done, ray.get(done)):
            p_idx, s_idx = pending[ref]
            k = p_idx * n + s_idx
            samples[k] = sample
            reward_refs[k] = rewards.submit(dict(prompts[p_idx].row, response=sample.text))
        if on_samples is not None:
            on_samples(len(done))
    generate_s = time.perf_counter() - t0
    results = ray.get(reward_refs)
    reward_wait_s = time.perf_counter() - t0 - generate_s
    return Rollout(prompts, samples, np.array([r["reward"] for r in results], dtype=np.float32),
                   [r["info"] for r in results], generate_s, reward_wait_s)
