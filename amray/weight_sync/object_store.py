"""The `object_store` weight sync (CPU, or any machine), all three sides of it:

- learner: rank 0 gathers the full state dict and packs it into one buffer
  (`LearnerRank.pack_weights`); Ray's object store holds it once per node.
- engine (`ObjectStoreEngineSide`, mixed into the engine actor): reads the buffer (zero-copy on
  the same node), copies it into a memfd (`WeightStage`) that its vLLM worker maps through
  `/proc/PID/fd/FD` and reloads from in place (`WorkerExtension`). Where the worker cannot open
  that file (another node) it falls back to vLLM's RPC channel, which serializes the buffer on
  each of its two hops (about 4x slower).
- driver (`ObjectStoreTransfer`): pack once, every engine loads the same object, one deadline.
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings

import numpy as np

from amray.weight_sync import WeightTransfer
from amray.weight_sync.packing import PackedWeights


class ObjectStoreTransfer(WeightTransfer):
    name = "object_store"

    def send(self, version: int) -> dict[str, float]:
        t0 = time.perf_counter()
        gathered = self.learners.pack_weights()  # rank 0's ref holds the buffer, put once
        self.wait(gathered, f"gathering the learner's weights for version {version}", fetch=False)
        gather_s = time.perf_counter() - t0
        packed = gathered[0]
        versions = self.wait(self.engines.load_weights(packed, version), f"weight sync to version {version}")
        if any(v != version for v in versions):
            raise RuntimeError(f"engines report weight versions {versions}, expected {version}")
        return {"sync_s": time.perf_counter() - t0, "sync_gather_s": gather_s}


class WorkerExtension:
    """Mixed into vLLM's worker (`worker_extension_cls`); runs inside the engine's worker process."""

    def amray_reload_weights(self, meta: dict, buffer) -> int:
        import torch

        from amray.weight_sync.packing import unpack_weights

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
    on disk and nothing to clean up: the kernel frees it with the last process holding it.
    Costs one model-size of host memory per engine, reused every sync."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("amray-weights", os.MFD_CLOEXEC)
        self.size = 0
        self.map = None

    @staticmethod
    def available() -> bool:
        return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")

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


class ObjectStoreEngineSide:
    """The engine actor's half of this backend (the actor class inherits it; `self.llm` is its
    vLLM AsyncLLM, `self.version` the weight version it serves)."""

    def init_object_store_side(self) -> None:
        self.stage = WeightStage() if WeightStage.available() else None
        self.sync_lock = asyncio.Lock()  # one reload at a time (the memfd is shared by them)

    async def load_weights(self, packed: PackedWeights, version: int) -> int:
        """Reload in place from a packed state dict (arrives through Ray's object store)."""
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

    def close_object_store_side(self) -> None:
        if self.stage is not None:
            self.stage.close()
