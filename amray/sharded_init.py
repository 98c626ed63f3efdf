"""Building the learner's model without ever holding all of it: on the meta device, sharded with
FSDP2, then each rank reads only its own rows of each weight from the safetensors files.

Loading the whole float32 model on every rank before sharding needs 4 bytes per parameter per
rank (128 GB for 32B, more than an 80 GB GPU). Here a rank allocates its 1/world_size shard and
reads into it the rows FSDP2 gives it (dim-0 shards, `torch.chunk` layout), one tensor at a time.

The files are read with plain positioned reads, not through a memory map: a map's touched pages
count as resident memory of every rank until it is closed, which would double each rank's peak.
Non-persistent buffers (rotary `inv_freq`) are not in the files and a meta build leaves them
empty: they are built for real on the CPU and copied in after allocation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from amray.policy import Policy

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


class SafetensorsRows:
    """Row ranges of the tensors of a Hugging Face model directory's safetensors file(s)."""

    def __init__(self, model_dir: str | Path) -> None:
        self.dir = Path(model_dir)
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (self.dir / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            raise FileNotFoundError(f"{self.dir}: no model.safetensors or model.safetensors.index.json; the learner "
                                    "reads safetensors (re-save the model with save_pretrained(safe_serialization=True))")
        self.entries: dict[str, tuple[Path, int, str, list[int]]] = {}  # name -> file, data offset, dtype, shape
        self.bytes_read = 0
        for name in files:
            path = self.dir / name
            with open(path, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
            for key, info in header.items():
                if key != "__metadata__":
                    self.entries[key] = (path, 8 + size + info["data_offsets"][0], info["dtype"], info["shape"])

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read_rows(self, name: str, start: int, stop: int, out: torch.Tensor) -> None:
        """Rows start:stop of tensor `name` (all of it if 0-d) into `out`, cast to its dtype."""
        path, offset, dtype_name, shape = self.entries[name]
        if dtype_name not in _DTYPES:
            raise ValueError(f"{path.name}: tensor {name} has dtype {dtype_name}, which the learner cannot load")
        dtype = _DTYPES[dtype_name]
        row = math.prod(shape[1:]) if shape else 1
        rows = stop - start if shape else 1
        if list(out.shape) != ([rows, *shape[1:]] if shape else []):
            raise ValueError(f"{path.name}: tensor {name} has shape {shape}; the model expects rows "
                             f"{start}:{stop} of shape {list(out.shape)} (does config.json match the weights?)")
        direct = out.dtype == dtype and out.is_contiguous() and out.device.type == "cpu"
        target = out if direct else torch.empty(out.shape, dtype=dtype)
        nbytes = rows * row * target.element_size()
        if nbytes:
            buffer = memoryview(target.view(-1).view(torch.uint8).numpy())
            with open(path, "rb", buffering=0) as f:
                f.seek(offset + start * row * target.element_size())
                got = 0
                while got < nbytes:
                    n = f.readinto(buffer[got:])
                    if not n:
                        raise ValueError(f"{path}: truncated while reading tensor {name}")
                    got += n
            self.bytes_read += nbytes
        if not direct:
            out.copy_(target)


def shard_rows(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows of a dim-0 FSDP2 shard (torch.chunk: ceil-sized chunks, the last ones shorter or empty)."""
    chunk = -(-rows // world_size)
    start = min(rank * chunk, rows)
    return start, min(start + chunk, rows)


def build_policy(model_dir: str, device: torch.device, param_dtype: torch.dtype, attn_implementation: str,
                 logprob_chunk: int, trainable: bool, gradient_checkpointing: bool = False) -> Policy:
    """The model of `model_dir` as a sharded `Policy` on `device`, float32 master weights (every
    rank calls this: FSDP is a collective)."""
    from accelerate import init_empty_weights
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers real (on the CPU)
        lm = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)
    lm.tie_weights()  # a meta build leaves tied embeddings untied: one parameter, sharded and loaded once
    if trainable and gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    buffers = {name: b.detach().clone() for name, b in lm.named_buffers()}
    policy = Policy(lm, logprob_chunk)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for layer in policy.decoder_layers:  # one FSDP unit per decoder layer, then the rest
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(policy, mesh=mesh, mp_policy=mp)
    policy.to_empty(device=device)
    files = SafetensorsRows(model_dir)
    load_shards(policy.lm, files, buffers)
    policy.checkpoint_bytes_read = files.bytes_read
    policy.train(trainable)
    return policy.requires_grad_(trainable)


@torch.no_grad()
def load_shards(lm: torch.nn.Module, files: SafetensorsRows, buffers: dict[str, torch.Tensor]) -> None:
    """Each parameter's local rows from `files`; buffers from `files` when saved there, else the
    CPU-built value in `buffers`. Tied weights are one parameter, loaded once."""
    rank, world = dist.get_rank(), dist.get_world_size()
    for name, p in lm.named_parameters():
        if name not in files:
            raise KeyError(f"{files.dir}: the safetensors files have no tensor {name!r} "
                           f"(the weights do not match config.json's architecture)")
        if isinstance(p, DTensor):
            local = p.to_local()
            start, stop = shard_rows(p.shape[0], rank, world) if p.dim() else (0, 1)
            if p.dim() and local.shape[0] != stop - start:
                raise RuntimeError(f"{name}: FSDP gave rank {rank} {local.shape[0]} rows, expected "
                                   f"{stop - start} (dim-0 torch.chunk layout)")
        else:
            local, (start, stop) = p, (0, p.shape[0] if p.dim() else 1)
        files.read_rows(name, start, stop, local)
    for name, b in lm.named_buffers():
        if name in files:
            files.read_rows(name, 0, b.shape[0] if b.dim() else 1, b)
        elif name in buffers:
            b.copy_(buffers[name])
