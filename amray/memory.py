"""What a learner rank holds, measured: the bytes of its parameter shards, gradients and optimizer
state, the activations autograd keeps for backward, and the process's peak resident memory.

`python -m amray.plan` predicts these by arithmetic; tests/test_plan.py holds its predictions to
these measurements, and benchmarks/bench_learner_memory.py reports the resident-memory side.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = _local(t).untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """This rank's parameter shards, gradient shards and optimizer state, in bytes."""
    params = list(model.parameters())
    states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    return {"parameters": storage_bytes(params), "gradients": storage_bytes([p.grad for p in params if p.grad is not None]),
            "optimizer": storage_bytes(states)}


class SavedActivations:
    """Used as `with tally:` around forward passes: the bytes of the tensors autograd saves for
    backward in each (parameters excepted, each storage once); `peak` is the largest. Tensors a
    checkpoint keeps as its inputs are not seen (they are the checkpointed region's input)."""

    def __init__(self) -> None:
        self.peak = 0
        self._storages: dict[int, int] = {}
        self._hooks = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        base = t if t._base is None else t._base
        if not (base.is_leaf and base.requires_grad):  # a parameter (or a view of one, W.t()) is not an activation
            s = t.untyped_storage()
            self._storages[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self) -> SavedActivations:
        self._storages = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self.peak = max(self.peak, sum(self._storages.values()))


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) from the current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """This process's peak resident memory since start or the last `reset_peak_rss` (Linux)."""
    m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) * 1024 if m else 0
