"""Rollout engines: the vLLM engine actor (actor.py) and the fleet of them (pool.py)."""

from amray.engine.actor import RolloutEngine, StaleWeights, engine_args, engine_threads
from amray.engine.pool import EnginePool, Request

__all__ = ["EnginePool", "Request", "RolloutEngine", "StaleWeights", "engine_args", "engine_threads"]
