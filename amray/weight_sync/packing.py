"""A state dict as one contiguous byte buffer: what the object-store backend moves."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PackedWeights:
    """A state dict as one contiguous byte buffer plus (name, dtype, shape, offset) records."""

    names: list[str]
    dtypes: list[str]
    shapes: list[list[int]]
    offsets: list[int]
    buffer: np.ndarray  # uint8
    hash: str = ""
    """`weights_hash` of the buffer, computed where it was packed; a receiver checks its copy."""

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)


def weights_hash(buffer) -> str:
    """CRC-32 and size of a packed buffer (7 GB/s here: cheap enough to check every sync).
    Logged as `sync/weights_hash`; equal hashes mean the engines serve the same bytes."""
    view = memoryview(buffer).cast("B")
    return f"{zlib.crc32(view):08x}-{view.nbytes:x}"


def pack_weights(named: list[tuple[str, torch.Tensor]]) -> PackedWeights:
    sizes = [t.numel() * t.element_size() for _, t in named]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist() if sizes else []
    buffer = np.empty(sum(sizes), dtype=np.uint8)
    flat = torch.from_numpy(buffer)
    for (name, t), off, size in zip(named, offsets, sizes):
        flat[off:off + size].copy_(t.detach().contiguous().view(-1).view(torch.uint8))
    return PackedWeights([n for n, _ in named], [str(t.dtype).removeprefix("torch.") for _, t in named],
                         [list(t.shape) for _, t in named], offsets, buffer, weights_hash(buffer))


def unpack_weights(names: list[str], dtypes: list[str], shapes: list[list[int]], offsets: list[int],
                   buffer: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Views into `buffer` (uint8), no copies."""
    out = []
    for name, dtype, shape, off in zip(names, dtypes, shapes, offsets):
        dt = getattr(torch, dtype)
        n = int(np.prod(shape)) if shape else 1
        nbytes = n * torch.empty((), dtype=dt).element_size()
        out.append((name, buffer[off:off + nbytes].view(dt).view(shape)))
    return out
