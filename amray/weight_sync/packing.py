"""A state dict as contiguous byte buffers: what the object-store backend moves.

A learner rank packs only its own FSDP2 rows of each weight (`pack_shard`: no collective, every
rank at once); an engine assembles the ranks' parts into the full layout (`assemble`), each
part's rows where they belong (dim-0 shards: a rank's rows are one contiguous byte range of the
full tensor), checking every part's bytes against the hash its packer computed."""

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
    rows: list[list[int]] | None = None
    """A part of a sharded state dict: rows [start, stop) of each tensor (`shapes` are the full
    tensors' shapes); None: whole tensors."""

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


def pack_shard(named: list[tuple[str, list[int], int, int, torch.Tensor]]) -> PackedWeights:
    """One learner rank's part: (name, full shape, first row, end row, those rows) per tensor."""
    packed = pack_weights([(name, local) for name, _, _, _, local in named])
    packed.shapes = [list(shape) for _, shape, _, _, _ in named]
    packed.rows = [[start, stop] for _, _, start, stop, _ in named]
    return packed


def _rows(shape: list[int]) -> int:
    return shape[0] if shape else 1


def _row_bytes(meta: dict, i: int) -> int:
    shape = meta["shapes"][i]
    item = torch.empty((), dtype=getattr(torch, meta["dtypes"][i])).element_size()
    return int(np.prod(shape[1:])) * item if shape else item


def layout(parts: list[PackedWeights]) -> dict:
    """The full state dict's records (names, dtypes, shapes, offsets) and byte size, tensors in
    the order the parts first name them."""
    names, dtypes, shapes, offsets, at = [], [], [], [], 0
    seen = set()
    for part in parts:
        for name, dtype, shape in zip(part.names, part.dtypes, part.shapes):
            if name not in seen:
                seen.add(name)
                names.append(name), dtypes.append(dtype), shapes.append(shape), offsets.append(at)
                at += int(np.prod(shape)) * torch.empty((), dtype=getattr(torch, dtype)).element_size()
    return {"names": names, "dtypes": dtypes, "shapes": shapes, "offsets": offsets, "nbytes": at}


def _regions(meta: dict, part: PackedWeights) -> list[tuple[int, int, int, int, int]]:
    """Where each tensor's rows of `part` go: (tensor index in `meta`, rows, offset in the part,
    offset in the full layout, bytes)."""
    where = {name: i for i, name in enumerate(meta["names"])}
    rows = part.rows or [[0, _rows(s)] for s in part.shapes]
    out = []
    for name, off, (start, stop) in zip(part.names, part.offsets, rows):
        i = where[name]
        row = _row_bytes(meta, i)
        out.append((i, stop - start, off, meta["offsets"][i] + start * row, (stop - start) * row))
    return out


def assemble(meta: dict, parts: list[PackedWeights], out: np.ndarray) -> bool:
    """Copy every part's rows into `out` (uint8, `meta["nbytes"]`) at their place in the full
    layout; every row of every tensor must come exactly once. Returns whether each part's bytes,
    read back from `out`, hash to what its packer computed."""
    covered = [0] * len(meta["names"])
    regions = [_regions(meta, part) for part in parts]
    for part, part_regions in zip(parts, regions):
        for i, rows, src, dst, n in part_regions:
            out[dst:dst + n] = part.buffer[src:src + n]
            covered[i] += rows
    missing = [meta["names"][i] for i, n in enumerate(covered) if n != _rows(meta["shapes"][i])]
    if missing:
        raise ValueError(f"the parts do not hold every row once of {missing[:5]}")
    intact = True
    for part, part_regions in zip(parts, regions):  # the bytes the engine will read, in the packer's order
        if part.hash:
            crc = 0
            for _, _, _, dst, n in part_regions:
                crc = zlib.crc32(memoryview(out[dst:dst + n]), crc)
            intact &= f"{crc:08x}-{part.nbytes:x}" == part.hash
    return intact


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
