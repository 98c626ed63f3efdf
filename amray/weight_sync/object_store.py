"""The `object_store` weight sync (CPU, or any machine), all three sides of it:

- learner: every rank packs its own FSDP2 rows of each weight into one buffer at once, with no
  gather (`LearnerRank.pack_shard`); Ray's object store holds each part once per node.
- engine (`ObjectStoreEngineSide`, mixed into the engine actor): reads the parts (zero-copy on
  the same node) and assembles them into a memfd (`WeightStage`, `packing.assemble`: one copy,
  each part's rows at their place in the full layout, every part's bytes checked against its
  packer's hash) that its vLLM worker maps through `/proc/PID/fd/FD` and reloads from in place
  (`WorkerExtension`). Where the worker cannot open that file (another node) it falls back to
  vLLM's RPC channel, which serializes the buffer on each of its two hops (about 4x slower).
- driver (`ObjectStoreTransfer`): every rank packs once, every engine loads the same objects,
  one deadline.
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings

import numpy as np

from amray.weight_sync import WeightTransfer
from amray.weight_sync.packing import PackedWeights, assemble, layout, weights_hash


class ObjectStoreTransfer(WeightTransfer):
    name = "object_store"

    def send(self, version: int) -> dict[str, float]:
        t0 = time.perf_counter()
        parts = self.learners.pack_shards()  # each rank's own rows, put once each
        self.wait(parts, f"packing the learner's weights for version {version}", fetch=False)
        pack_s = time.perf_counter() - t0
        self.engines.load_weights(parts, version, self.wait)
        return {"sync_s": time.perf_counter() - t0, "sync_gather_s": pack_s, "weights_hash": self.engines.weights_hash}


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

    def amray_host(self) -> str:
        """Which machine this worker runs on (hostname and boot id)."""
        return _host()

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

    def write(self, meta: dict, parts: list[PackedWeights]) -> tuple[tuple[int, int, int], bool]:
        """The parts assembled into the file (`packing.assemble`); where the worker finds it, and
        whether every part arrived intact."""
        import mmap

        n = int(meta["nbytes"])
        if n != self.size:  # first sync, or a model of another size
            if self.map is not None:
                self.map.close()
            os.ftruncate(self.fd, n)
            self.map, self.size = mmap.mmap(self.fd, n), n
        intact = assemble(meta, parts, np.frombuffer(self.map, dtype=np.uint8))
        return (os.getpid(), self.fd, n), intact

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
        self.stage_checked = False
        self.sync_lock = asyncio.Lock()  # one reload at a time (the memfd is shared by them)
        self.weights_hash = ""

    async def _choose_path(self) -> None:
        """Before the first transfer: the memfd only where every vLLM worker runs on this machine
        (a worker placed on another node, as vLLM's Ray executor may do, gets the RPC channel)."""
        self.stage_checked = True
        if self.stage is None:
            return
        hosts = await self.llm.collective_rpc("amray_host")
        if any(h != _host() for h in hosts):
            self.stage.close()
            self.stage = None

    async def load_weights(self, version: int, *parts: PackedWeights) -> tuple[int, str]:
        """Reload in place from a packed state dict (whole, or the learner ranks' parts; they
        arrive through Ray's object store) and serve it as `version`. The bytes the worker reads
        are checked against each packer's hash: on a mismatch the engine refuses every request
        until a good sync (version -1). Requests in flight (the asynchronous mode) are frozen
        while the weights change and then go on. Returns the version and the hash of what was
        loaded (of the whole state dict, as the worker reads it)."""
        meta = layout(list(parts))
        async with self.sync_lock:
            if not self.stage_checked:
                await self._choose_path()
            frozen = self.running > 0
            if frozen:
                await self.llm.pause_generation(mode="keep", clear_cache=False)
            try:
                loaded, intact = await self._reload(meta, list(parts))
                if not intact:
                    self.version = -1
                    raise RuntimeError(f"weights for version {version} arrived as {loaded}, not as packed "
                                       f"({', '.join(p.hash for p in parts)}): this engine refuses requests "
                                       "until a sync succeeds")
                self.version, self.weights_hash = version, loaded
            finally:
                if frozen:
                    await self.llm.resume_generation()
            await self.llm.reset_prefix_cache()  # cached KV was computed by the old weights
        return version, loaded

    async def _reload(self, meta: dict, parts: list[PackedWeights]) -> tuple[str, bool]:
        """Assemble the parts where the worker reads them and have it reload; the hash of the
        bytes it read, and whether every part arrived intact."""
        if self.stage is not None:
            where, intact = self.stage.write(meta, parts)
            loaded = weights_hash(self.stage.map)
            if not intact:
                return loaded, False
            try:
                await self.llm.collective_rpc("amray_reload_weights_fd", args=(meta, *where))
                return loaded, True
            except Exception as e:  # noqa: BLE001 - the worker could not map it: the channel, for good
                warnings.warn(f"weight sync through a memory file failed ({e!r}); using vLLM's RPC channel")
                self.stage.close()
                self.stage = None
        buffer = np.empty(meta["nbytes"], dtype=np.uint8)
        intact = assemble(meta, parts, buffer)
        if intact:
            await self.llm.collective_rpc("amray_reload_weights", args=(meta, buffer.data))
        return weights_hash(buffer), intact

    def close_object_store_side(self) -> None:
        if self.stage is not None:
            self.stage.close()


def _host() -> str:
    import socket

    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"
