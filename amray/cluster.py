"""Bring up the actors of a run (engines, learner ranks, reward workers) and move weights
between them. The CPU/GPU difference lives here and in `weight_sync`: which collective backend,
how weights travel.
"""

from __future__ import annotations

import os
import time

import ray

from amray.config import Config
from amray.learner import LearnerGroup
from amray.rewards.pool import RewardPool
from amray.rollout import EnginePool
from amray.weight_sync import WeightSyncTimeout


def init_ray(cfg: Config) -> None:
    """Join the cluster we were submitted to (`ray job submit`), or the given address, or start
    a local one. Locally, Ray gets more logical CPUs than cores: our actors are mostly idle."""
    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": str(cfg.rollout.kv_cache_gib)}}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # address="local": a fresh local Ray, never a stray cluster someone left running
        ray.init(address="local", num_cpus=cfg.ray.num_cpus or max(8, os.cpu_count() or 1),
                 include_dashboard=False, runtime_env=env)


def sync_backend(cfg: Config) -> str:
    if cfg.sync.backend != "auto":
        return cfg.sync.backend
    return "nccl" if cfg.rollout.num_gpus > 0 and cfg.trainer.num_gpus > 0 else "object_store"


class Cluster:
    """Engines + learner group + reward pool for one run, and the weight sync between them."""

    def __init__(self, cfg: Config, model_dir: str) -> None:
        self.cfg = cfg
        self.sync_backend = sync_backend(cfg)
        if self.sync_backend not in ("object_store", "nccl", "ipc"):
            raise ValueError(f"sync.backend={self.sync_backend!r}: use object_store, nccl, ipc or auto")
        transfer = "" if self.sync_backend == "object_store" else self.sync_backend
        self.engines = EnginePool(model_dir, cfg.rollout, transfer)
        self.learners = LearnerGroup(model_dir, cfg.trainer, cfg.grpo)
        self.rewards = RewardPool(cfg.reward)
        self.rewards.warmup()
        if transfer:
            self.learners.init_weight_transfer(transfer, self.engines.engines,
                                               len(self.engines.engines) * cfg.rollout.tensor_parallel_size)
        self.weight_version = 0

    def sync_weights(self) -> dict[str, float]:
        """Learner -> every engine; raises WeightSyncTimeout past sync.timeout_s."""
        t0 = time.perf_counter()
        self.weight_version += 1
        timeout = self.cfg.sync.timeout_s
        if self.sync_backend == "object_store":
            packed = self.learners.pack_weights_ref()
            gather_s = time.perf_counter() - t0
            self.engines.load_weights(packed, self.weight_version, timeout)
        else:
            ref = self.learners.ranks[0].send_weights.remote()
            others = [r.send_weights.remote() for r in self.learners.ranks[1:]]
            ready, pending = ray.wait([ref, *others], num_returns=1 + len(others), timeout=timeout)
            if pending:
                raise WeightSyncTimeout(f"{self.sync_backend} weight sync did not finish within {timeout:.0f}s")
            ray.get(ready)
            gather_s = 0.0
            ray.get([e.update_weight_version.remote(str(self.weight_version)) for e in self.engines.engines])
        return {"sync_s": time.perf_counter() - t0, "sync_gather_s": gather_s}

    def shutdown(self) -> None:
        self.rewards.shutdown()
        self.engines.shutdown()
        self.learners.shutdown()
