"""Bring up the actors of a run (engines, learner ranks, reward workers) and the weight sync
between them; join or start Ray.
"""

from __future__ import annotations

from amray.config import Config, validate
from amray.engine import EnginePool
from amray.learner import LearnerGroup
from amray.rayenv import init_ray  # noqa: F401  (joining Ray lives in amray/rayenv.py, light to import)
from amray.rewards.pool import RewardPool
from amray.weight_sync import make_transfer, resolve_backend


class Cluster:
    """Engines + learner group + reward pool for one run, and the weight sync between them."""

    def __init__(self, cfg: Config, model_dir: str) -> None:
        self.cfg, self.model_dir = validate(cfg), model_dir  # a config built or changed in Python, checked
        self.sync_backend = resolve_backend(cfg.sync.backend, cfg.rollout.num_gpus, cfg.trainer.num_gpus)
        transfer = "" if self.sync_backend == "object_store" else self.sync_backend
        # The engines load while the learner ranks and reward workers start (each side is mostly
        # process start-up and imports: ~15 s for a vLLM engine on CPU).
        self.engines = EnginePool(model_dir, cfg.rollout, transfer, cfg.ray.placement_timeout_s, wait=False)
        self.learners = self.rewards = None
        try:
            self.learners = LearnerGroup(model_dir, cfg.trainer, reference=cfg.grpo.kl_coef > 0,
                                         placement_timeout_s=cfg.ray.placement_timeout_s)
            self.train_dtype = self.learners.compute_dtype
            self.rewards = RewardPool(cfg.reward)
            self.rewards.warmup()
            self.engines.wait_ready()
        except BaseException:
            for part in (self.rewards, self.engines, self.learners):
                if part is not None:
                    part.shutdown()
            raise
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
