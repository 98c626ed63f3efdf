"""Rollout engine: vLLM's async engine inside a Ray actor.

Public protocol (all the driver uses):
    generate(prompt_ids, sampling)      -> Sample            one sample, as soon as it finishes
    sequence_logprobs(token_ids, start) -> np.ndarray        logprob of each token from `start` on
    load_weights(state, version)        -> int               CPU sync: in-place reload from a state dict
                                                             (handed to vLLM's worker via a memfd)
    weight_version()                    -> int
plus vLLM's weight-transfer protocol (init_weight_transfer_engine, start_weight_update,
update_weights, finish_weight_update, update_weight_version) for the GPU nccl/ipc sync.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import ray

from amray.config import RolloutConfig
from amray.weight_sync import PackedWeights


@dataclass
class Sample:
    """One generated response and what GRPO needs to know about it."""

    prompt_index: int
    sample_index: int
    token_ids: np.ndarray  # response tokens (int64)
    logprobs: np.ndarray  # vLLM's sampling logprob of each response token (float32)
    text: str
    finish_reason: str  # "stop" | "length" | "abort"
    weight_version: int

    @property
    def truncated(self) -> bool:
        """Cut at max_tokens: AM-Thinking gives such responses zero advantage."""
        return self.finish_reason == "length"


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
        worker_extension_cls="amray.engine.WorkerExtension",
        disable_log_stats=True,
        **extra,
    )


class WorkerExtension:
    """Mixed into vLLM's worker (via `worker_extension_cls`); runs inside the engine process."""

    def amray_reload_weights(self, meta: dict, buffer) -> int:
        import torch

        from amray.weight_sync import unpack_weights

        with warnings.catch_warnings():  # read-only bytes: we only read them, no copy needed
            warnings.simplefilter("ignore", UserWarning)
            buffer = torch.frombuffer(buffer, dtype=torch.uint8)
        weights = unpack_weights(meta["names"], meta["dtypes"], meta["shapes"], meta["offsets"], buffer)
        # Plain `model.load_weights` fails on the CPU backend (weights are repacked for its
        # kernels); the runner's in-place reload redoes that processing.
        self.model_runner.reload_weights(weights_iterator=iter(weights))
        return len(weights)

    def amray_reload_weights_fd(self, meta: dict, pid: int, fd: int, nbytes: int) -> int:
        """The same reload, reading the packed buffer from the engine actor's memory file
        (`/proc/PID/fd/FD`) instead of receiving it through vLLM's RPC channel."""
        import mmap

        with open(f"/proc/{pid}/fd/{fd}", "rb") as f:
            mm = mmap.mmap(f.fileno(), nbytes, prot=mmap.PROT_READ)
        try:
            return self.amray_reload_weights(meta, mm)
        finally:
            try:
                mm.close()
            except BufferError:  # a view is still alive somewhere; the GC unmaps it later
                pass


class WeightStage:
    """An anonymous memory file (memfd) the engine actor copies each packed state dict into;
    vLLM's worker, a child process on the same machine, maps it by `/proc/PID/fd/FD`. Nothing
    on disk and nothing to clean up: the kernel frees it with the last process holding it."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("amray-weights", os.MFD_CLOEXEC)
        self.size = 0
        self.map = None

    def write(self, buffer: np.ndarray) -> tuple[int, int, int]:
        import mmap

        n = int(buffer.nbytes)
        if n != self.size:  # first sync, or a model of another size
            if self.map is not None:
                self.map.close()
            os.ftruncate(self.fd, n)
            self.map, self.size = mmap.mmap(self.fd, n), n
        np.frombuffer(self.map, dtype=np.uint8)[:] = buffer.reshape(-1).view(np.uint8)
        return os.getpid(), self.fd, n

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@ray.remote
class RolloutEngine:
    def __init__(self, model_dir: str, cfg: RolloutConfig, weight_transfer: str = "", index: int = 0) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm.v1.engine.async_llm import AsyncLLM

        self.llm = AsyncLLM.from_engine_args(engine_args(model_dir, cfg, weight_transfer, index))
        self.version = 0
        # One model-size of host memory per engine, reused every sync.
        self.stage = WeightStage() if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd") else None
        self.sync_lock = asyncio.Lock()  # one reload at a time (the memfd is shared by them)
        import vllm
        self.backend = f"vllm {vllm.__version__}"

    def info(self) -> dict:
        return {"backend": self.backend, "weight_version": self.version}

    def weight_version(self) -> int:
        return self.version

    async def generate(self, prompt_ids: list[int], sampling: dict, prompt_index: int = 0,
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
        return Sample(prompt_index, sample_index, ids, lps, comp.text, comp.finish_reason or "abort", version)

    async def sequence_logprobs(self, token_ids: list[int], start: int = 1, temperature: float = 1.0) -> np.ndarray:
        """Logprob of token_ids[i] given token_ids[:i] for i >= start, scored by the served weights."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=temperature, detokenize=False)
        final = None
        async for out in self.llm.generate({"prompt_token_ids": [int(t) for t in token_ids]}, params, uuid.uuid4().hex):
            final = out
        plp = final.prompt_logprobs  # entry 0 is None (no context)
        return np.asarray([plp[i][token_ids[i]].logprob for i in range(start, len(token_ids))], dtype=np.float32)

    async def load_weights(self, packed: PackedWeights, version: int) -> int:
        """CPU sync: the packed state dict arrives through Ray's object store (zero-copy numpy).
        It reaches vLLM's worker process through a memory file (one memcpy; the worker maps it),
        or, where the worker cannot open that file (another node), through vLLM's RPC channel,
        which serializes the whole buffer on each of its two hops (about 4x slower)."""
        meta = {"names": packed.names, "dtypes": packed.dtypes, "shapes": packed.shapes, "offsets": packed.offsets}
        async with self.sync_lock:
            await self._reload(meta, packed)
            await self.llm.reset_prefix_cache()  # cached KV was computed by the old weights
            self.version = version
        return version

    async def _reload(self, meta: dict, packed: PackedWeights) -> None:
        if self.stage is not None:
            try:
                await self.llm.collective_rpc("amray_reload_weights_fd", args=(meta, *self.stage.write(packed.buffer)))
                return
            except Exception as e:  # noqa: BLE001 - the worker could not map it: the channel, for good
                warnings.warn(f"weight sync through a memory file failed ({e!r}); using vLLM's RPC channel")
                self.stage.close()
                self.stage = None
        await self.llm.collective_rpc("amray_reload_weights", args=(meta, packed.buffer.data))

    # --- vLLM weight-transfer protocol (GPU: nccl / ipc), driven by the learner's sender rank.
    async def init_weight_transfer_engine(self, request) -> None:
        await self.llm.init_weight_transfer_engine(request)

    async def start_weight_update(self) -> None:
        await self.llm.start_weight_update()

    async def update_weights(self, request) -> None:
        await self.llm.update_weights(request)

    async def finish_weight_update(self) -> None:
        await self.llm.finish_weight_update()
        await self.llm.reset_prefix_cache()

    async def update_weight_version(self, version: str) -> None:
        await self.llm.update_weight_version(version)
        self.version = int(version)

    def shutdown(self) -> None:
        if self.stage is not None:
            self.stage.close()
        self.llm.shutdown()
