"""Moving the learner's weights into the rollout engines after every update: one interface, one
file per backend, the deadline in one place.

    transfer = make_transfer(cfg, learners, engines)   # backend from sync.backend
    stats = transfer.send(version)                     # every engine now serves `version`
    transfer.close()

Backends (each file holds the learner side, the engine side and the driver side of its backend):
- `object_store` (object_store.py; CPU, or any machine): every learner rank packs its own rows of
  each weight into a buffer in Ray's object store (no gather); each engine assembles the parts
  into a memfd its vLLM worker maps, and reloads in place.
- `nccl` (nccl.py) / `ipc` (ipc.py; GPU): vLLM's own weight-transfer engines
  (`vllm.distributed.weight_transfer`); learner rank 0 broadcasts straight into the engines' GPUs.
The driver never branches on the backend: it calls `send(version)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import ray

BACKENDS = ("object_store", "nccl", "ipc")


class WeightSyncTimeout(RuntimeError):
    """A sync that did not finish within `sync.timeout_s` (raised instead of hanging the job)."""


class WeightTransfer(ABC):
    """Learner -> every engine. `send(version)` returns timings (`sync_s`, and `sync_gather_s`: the
    learner side's part, gathering or packing the weights before any engine loads them)."""

    name = ""

    def __init__(self, learners, engines, timeout_s: float) -> None:
        self.learners, self.engines, self.timeout_s = learners, engines, timeout_s

    @abstractmethod
    def send(self, version: int) -> dict[str, float]: ...

    def close(self) -> None:
        """Release what the backend holds (nothing, for most)."""

    def wait(self, refs: list, what: str, fetch: bool = True) -> list:
        """The results of all `refs` (with `fetch=False`, only wait: nothing moves to the driver),
        or WeightSyncTimeout naming `what` once the deadline passes."""
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s, fetch_local=False)
        if pending:
            raise WeightSyncTimeout(f"{what} did not finish within {self.timeout_s:.0f}s ({len(pending)} of "
                                    f"{len(refs)} calls pending); raise sync.timeout_s for big models")
        return ray.get(refs) if fetch else refs


def resolve_backend(backend: str, rollout_gpus: float, trainer_gpus: float) -> str:
    """`auto`: nccl when engines and learners both have GPUs, else the object store."""
    if backend == "auto":
        return "nccl" if rollout_gpus > 0 and trainer_gpus > 0 else "object_store"
    if backend not in BACKENDS:
        raise ValueError(f"sync.backend={backend!r}: use {', '.join(BACKENDS)} or auto")
    return backend


def make_transfer(backend: str, learners, engines, timeout_s: float) -> WeightTransfer:
    if backend == "object_store":
        from amray.weight_sync.object_store import ObjectStoreTransfer as cls
    elif backend == "nccl":
        from amray.weight_sync.nccl import NCCLTransfer as cls
    elif backend == "ipc":
        from amray.weight_sync.ipc import IPCTransfer as cls
    else:
        raise ValueError(f"sync.backend={backend!r}: use {', '.join(BACKENDS)}")
    return cls(learners, engines, timeout_s)
