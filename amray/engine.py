"""Rollout engines: vLLM's async engine inside a Ray actor, and the fleet of them (`EnginePool`).

Public protocol of an engine actor (all the driver uses):
    generate(prompt_ids, sampling, group_id, sample_index) -> Sample   one sample, as soon as it finishes
    sequence_logprobs(token_ids, start, temperature)       -> np.ndarray  logprob of each token from `start` on
    weight_version()                                       -> int
plus the engine side of each weight-sync backend (amray/weight_sync): `load_weights` (object
store) and vLLM's weight-transfer protocol (nccl / ipc).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import ray

from amray.actors import call_all, fan_out, kill_all
from amray.batch import Prompt, Sample
from amray.config import RolloutConfig
from amray.weight_sync.object_store import ObjectStoreEngineSide
from amray.weight_sync.vllm_transfer import VLLMTransferEngineSide


def engine_args(model_dir: str, cfg: RolloutConfig, weight_transfer: str = "", index: int = 0):
    """vLLM engine arguments of a rollout engine (also used by benchmarks to build the same
    engine outside Ray)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    from vllm.engine.arg_utils import AsyncEngineArgs

    extra = {}
    if weight_transfer:
        from vllm.config.weight_transfer import WeightTransferConfig
        extra["weight_transfer_config"] = WeightTransferConfig(backend=weight_transfer)
    return AsyncEngineArgs(
        model=model_dir,
        dtype=cfg.dtype,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_model_len=cfg.max_model_len,
        enforce_eager=cfg.enforce_eager,
        seed=(cfg.seed or 0) + index,
        # Logprobs of the distribution actually sampled from (after temperature/top-p),
        # which is what the learner's importance ratio is computed against.
        logprobs_mode="processed_logprobs",
        worker_extension_cls="amray.weight_sync.object_store.WorkerExtension",
        disable_log_stats=True,
        **extra,
    )


@ray.remote
class RolloutEngine(ObjectStoreEngineSide, VLLMTransferEngineSide):
    def __init__(self, model_dir: str, cfg: RolloutConfig, weight_transfer: str = "", index: int = 0) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        import vllm
        from vllm.v1.engine.async_llm import AsyncLLM

        self.llm = AsyncLLM.from_engine_args(engine_args(model_dir, cfg, weight_transfer, index))
        self.version = 0
        self.backend = f"vllm {vllm.__version__}"
        self.init_object_store_side()

    def info(self) -> dict:
        return {"backend": self.backend, "weight_version": self.version}

    def weight_version(self) -> int:
        return self.version

    async def generate(self, prompt_ids: list[int], sampling: dict, group_id: str = "",
                       sample_index: int = 0) -> Sample:
        """Generate one response; `sampling` holds vLLM SamplingParams fields (n is always 1:
        the driver asks for each sample separately so each can be scored the moment it lands)."""
        from vllm import SamplingParams

        params = SamplingParams(n=1, logprobs=0, **sampling)
        final = None
        version = self.version
        async for out in self.llm.generate({"prompt_token_ids": [int(t) for t in prompt_ids]}, params, uuid.uuid4().hex):
            final = out
        comp = final.outputs[0]
        ids = np.asarray(comp.token_ids, dtype=np.int64)
        lps = np.asarray([entry[tok].logprob for tok, entry in zip(comp.token_ids, comp.logprobs)], dtype=np.float32)
        return Sample(group_id, sample_index, ids, lps, comp.text, comp.finish_reason or "abort", version)

    async def sequence_logprobs(self, token_ids: list[int], start: int = 1, temperature: float = 1.0) -> np.ndarray:
        """Logprob of token_ids[i] given token_ids[:i] for i >= start, scored by the served weights."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=temperature, detokenize=False)
        final = None
        async for out in self.llm.generate({"prompt_token_ids": [int(t) for t in token_ids]}, params, uuid.uuid4().hex):
            final = out
        plp = final.prompt_logprobs  # entry 0 is None (no context)
        return np.asarray([plp[i][token_ids[i]].logprob for i in range(start, len(token_ids))], dtype=np.float32)

    def shutdown(self) -> None:
        self.close_object_store_side()
        self.llm.shutdown()


class EnginePool:
    """The rollout engine actors, used as one."""

    def __init__(self, model_dir: str, cfg: RolloutConfig, weight_transfer: str = "") -> None:
        self.cfg = cfg
        opts = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus, "max_concurrency": 100_000}
        self.actors = [RolloutEngine.options(**opts).remote(model_dir, cfg, weight_transfer, i)
                       for i in range(cfg.num_engines)]
        self.backend = ray.get(self.actors[0].info.remote())["backend"]
        self._next = 0

    @property
    def ranks(self) -> int:
        """Devices serving the fleet (engines x tensor-parallel size): weight-transfer group members."""
        return len(self.actors) * self.cfg.tensor_parallel_size

    def sampling(self, temperature: float | None = None, top_p: float | None = None,
                 max_tokens: int | None = None) -> dict:
        c = self.cfg
        return {"temperature": c.temperature if temperature is None else temperature,
                "top_p": c.top_p if top_p is None else top_p,
                "max_tokens": c.max_tokens if max_tokens is None else max_tokens,
                "stop": list(c.stop) or None}

    def submit(self, prompt: Prompt, group_id: str, sample_index: int, sampling: dict,
               seed: int | None = None) -> ray.ObjectRef:
        engine = self.actors[self._next % len(self.actors)]
        self._next += 1
        params = dict(sampling, seed=seed) if seed is not None else sampling
        return engine.generate.remote(prompt.token_ids, params, group_id, sample_index)

    def load_weights(self, packed_ref: ray.ObjectRef, version: int) -> list[ray.ObjectRef]:
        """Object-store sync: every engine reloads from the same object (one copy per node)."""
        return fan_out(self.actors, "load_weights", packed_ref, version)

    def update_weight_version(self, version: int) -> list[ray.ObjectRef]:
        return fan_out(self.actors, "update_weight_version", version)

    def weight_versions(self) -> list[int]:
        return call_all(self.actors, "weight_version")

    def sequence_logprobs(self, token_ids: list[int], start: int, temperature: float = 1.0) -> np.ndarray:
        return ray.get(self.actors[0].sequence_logprobs.remote(token_ids, start, temperature))

    def shutdown(self) -> None:
        kill_all(self.actors, graceful="shutdown")
