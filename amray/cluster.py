"""Bring up the actors of a run (engines, learner ranks, reward workers) and the weight sync
between them; join or start Ray.
"""

from __future__ import annotations

import os

import ray

from amray.config import Config
from amray.engine import EnginePool
from amray.learner import LearnerGroup
from amray.rewards.pool import RewardPool
from amray.weight_sync import make_transfer, resolve_backend


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


class Cluster:
    """Engines + learner group + reward pool for one run, and the weight sync between them."""

    def __init__(self, cfg: Config, model_dir: str) -> None:
        self.cfg = cfg
        self.sync_backend = resolve_backend(cfg.sync.backend, cfg.rollout.num_gpus, cfg.trainer.num_gpus)
        transfer = "" if self.sync_backend == "object_store" else self.sync_backend
        self.engines = EnginePool(model_dir, cfg.rollout, transfer)
        self.learners = LearnerGroup(model_dir, cfg.trainer, reference=cfg.grpo.kl_coef > 0)
        self.rewards = RewardPool(cfg.reward)
        self.rewards.warmup()
        self.transfer = make_transfer(self.sync_backend, self.learners, self.engines, cfg.sync.timeout_s)
        self.weight_version = 0

    def sync_weights(self) -> dict[str, float]:
        """Learner -> every engine; raises WeightSyncTimeout past sync.timeout_s."""
        self.weight_version += 1
        return self.transfer.send(self.weight_version)

    def shutdown(self) -> None:
        self.transfer.close()
        self.rewards.shutdown()
        self.engines.shutdown()
        self.learners.shutdown()
