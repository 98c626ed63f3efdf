"""The rollout engine: vLLM's async engine inside a Ray actor.

Public protocol (all the fleet uses):
    submit([(dispatch id, prompt_ids, sampling, group_id, sample_index, min_version), ...])  start them
    poll(timeout_s) -> [(dispatch id, Sample | exception), ...]   what finished since the last poll
    abort(dispatch_ids)                                              stop requests the fleet gave up on
    sequence_logprobs(token_ids, start, temperature)                  -> np.ndarray  logprob of each token from `start` on
    info(), weight_version(), slow_down(seconds) (a test hook)
plus the engine side of each weight-sync backend (amray/weight_sync): `load_weights` (object
store) and vLLM's weight-transfer protocol (nccl / ipc).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid

import numpy as np
import ray

from amray.batch import Sample
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
    if one_process_engine(cfg):
        from vllm.v1.executor.uniproc_executor import UniProcExecutor

        extra["distributed_executor_backend"] = UniProcExecutor
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


def one_process_engine(cfg: RolloutConfig) -> bool:
    """On CPU vLLM runs even a one-rank model in a worker process of its own beside the engine
    core ("mp"), so that it can pin that process's OpenMP threads. With no pinning ("nobind", what
    amray sets) and one rank the worker can live in the engine-core process, as it does on a GPU:
    one spawned process (~6 s of imports) fewer per engine start, and no message queue between
    scheduler and model on every step (tiny model: ~20% more tokens/s on 2 cores). The executor
    is passed as a class: vLLM's CPU platform replaces the name "uni" by "mp"."""
    from vllm.platforms import current_platform

    return (current_platform.is_cpu() and cfg.tensor_parallel_size == 1
            and os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == "nobind")


class StaleWeights(RuntimeError):
    """A request expected other weights than the engine serves (its sync failed): re-dispatched."""


def engine_threads(cfg: RolloutConfig) -> int:
    return cfg.threads if cfg.threads > 0 else max(1, math.ceil(cfg.num_cpus))


@ray.remote
class RolloutEngine(ObjectStoreEngineSide, VLLMTransferEngineSide):
    def __init__(self, model_dir: str, cfg: RolloutConfig, weight_transfer: str = "", index: int = 0) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        # Ray gives a fractional-CPU actor OMP_NUM_THREADS=1, and vLLM's worker inherits it.
        os.environ["OMP_NUM_THREADS"] = str(engine_threads(cfg))
        import vllm
        from vllm.v1.engine.async_llm import AsyncLLM

        self.llm = AsyncLLM.from_engine_args(engine_args(model_dir, cfg, weight_transfer, index))
        self.version = 0
        self.backend = f"vllm {vllm.__version__}"
        self.running = 0
        self.delay_s = 0.0
        self.vllm_requests = 0  # requests made of vLLM (a group's samples sent together are one)
        self.tasks: dict = {}  # dispatch id -> its generation task (submit / poll / abort)
        self.finished: list = []
        self.landed = asyncio.Event()
        self.init_object_store_side()

    def info(self) -> dict:
        return {"backend": self.backend, "weight_version": self.version, "weights_hash": self.weights_hash,
                "max_num_seqs": int(self.llm.vllm_config.scheduler_config.max_num_seqs)}

    def weight_version(self) -> int:
        return self.version

    def slow_down(self, seconds: float) -> None:
        """Test hook: every request waits this long before it starts (an overloaded engine)."""
        self.delay_s = seconds

    async def _generate(self, prompt_ids: list[int], sampling: dict, group_id: str, indices: list[int],
                        min_version: int | None) -> list[Sample]:
        """len(indices) samples of one prompt as one vLLM request (n of them: its prompt processed
        once); `sampling` holds vLLM SamplingParams fields but n. A request for weights at least
        `min_version` is refused by an engine serving older ones (its sync failed); a newer
        version is fine (a sync landed while the request was queued)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if min_version is not None and self.version < min_version:
            raise StaleWeights(f"engine serves weight version {self.version}, the request needs {min_version}")
        # FINAL_ONLY: one output when the request finishes, not one per token (a cumulative output
        # per token costs this actor's event loop O(length) each, for every request in flight).
        # Without stop strings vLLM need not detokenize as it goes (nor decode each sampled token
        # for its logprob entry, most of this process's work): the text is decoded once at the end.
        detokenize = bool(sampling.get("stop"))
        params = SamplingParams(n=len(indices), logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY,
                                detokenize=detokenize, **sampling)
        self.running += 1
        self.vllm_requests += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            final = None
            version = self.version
            async for out in self.llm.generate({"prompt_token_ids": [int(t) for t in prompt_ids]}, params,
                                               uuid.uuid4().hex):
                final = out
        finally:
            self.running -= 1
        samples, tokenizer = [], None if detokenize else self.llm.get_tokenizer()
        for index, comp in zip(indices, sorted(final.outputs, key=lambda c: c.index)):
            ids = np.asarray(comp.token_ids, dtype=np.int64)
            lps = np.asarray([entry[tok].logprob for tok, entry in zip(comp.token_ids, comp.logprobs)], dtype=np.float32)
            text = comp.text if detokenize else tokenizer.decode(
                comp.token_ids, skip_special_tokens=sampling.get("skip_special_tokens", True))
            samples.append(Sample(group_id, index, ids, lps, text, comp.finish_reason or "abort", version))
        return samples

    async def submit(self, batch: list[tuple]) -> None:
        """Start generating each (dispatch id, prompt_ids, sampling, group_id, sample_index,
        min_version); `poll` returns them as they finish. Samples of one group with the same
        sampling (and no per-request seed) go to vLLM as one request of n: its prompt is processed
        once, and they finish together, as the group is complete only with its last sample anyway."""
        runs: dict = {}  # one vLLM request each: (its arguments, sample indices, dispatch ids)
        for did, prompt_ids, sampling, group_id, index, min_version in batch:
            key = did if "seed" in sampling else (group_id, min_version, json.dumps(sampling, sort_keys=True, default=str))
            _, indices, dids = runs.setdefault(key, ((prompt_ids, sampling, group_id, min_version), [], []))
            indices.append(index)
            dids.append(did)
        for (prompt_ids, sampling, group_id, min_version), indices, dids in runs.values():
            task = asyncio.ensure_future(self._run(dids, prompt_ids, sampling, group_id, indices, min_version))
            self.tasks.update(dict.fromkeys(dids, task))

    async def _run(self, dids: list, *args) -> None:
        try:
            results = await self._generate(*args)
        except asyncio.CancelledError:
            return
        except StaleWeights as e:
            results = [e] * len(dids)
        except Exception as e:  # noqa: BLE001 - handed to the fleet, which retries it elsewhere
            results = [RuntimeError(f"{type(e).__name__}: {e}")] * len(dids)  # vLLM's own may not pickle
        finally:
            for did in dids:
                self.tasks.pop(did, None)
        self.finished += zip(dids, results)
        self.landed.set()

    async def poll(self, timeout_s: float) -> list:
        """(dispatch id, Sample or the exception it raised) of each request finished since the
        last poll; waits up to `timeout_s` for the first."""
        if not self.finished:
            try:
                await asyncio.wait_for(self.landed.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        out, self.finished = self.finished, []
        self.landed.clear()
        return out

    async def abort(self, dispatch_ids: list) -> None:
        """Stop these requests (the fleet gave up on them: overdue); vLLM frees their slots."""
        for did in dispatch_ids:
            task = self.tasks.pop(did, None)
            if task is not None:
                task.cancel()

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
