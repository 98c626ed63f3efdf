"""A capacity plan that needs no cluster: will this config fit N nodes of G GPUs, and where not.

    python -m amray.plan --config configs/am_thinking_32b_stage1.yaml --nodes 16 --gpus-per-node 8 \\
        --gpu-memory-gib 80 [--link-gbps 400] [--json]

Per learner rank: parameter / gradient / optimizer / activation memory at the configured
micro-batch (with and without gradient checkpointing) and the logprob chunk; per engine: the KV
cache and how many sequences of `rollout.max_model_len` it holds at once; bytes moved per weight
sync and the time at the given link speed; whether the run fits, and the first thing that does
not. Exit status 0 when it fits, 1 when it does not.
"""

from __future__ import annotations

import math

from amray.config import Config
from amray.plan.arithmetic import (
    GIB,
    USABLE_FRACTION,
    engine_memory,
    learner_memory,
    place,
    sync_seconds,
)
from amray.plan.shape import ModelShape, model_shape

__all__ = ["ModelShape", "learner_memory", "model_shape", "plan", "compute_bytes"]

_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "auto": 2}


def compute_bytes(dtype: str, on_gpu: bool) -> int:
    """Bytes per element of the learner's compute dtype (`trainer.dtype`; `auto` is bfloat16 on a
    GPU, and on this machine's CPU what amray.policy.compute_dtype picks)."""
    if dtype == "auto" and not on_gpu:
        import torch

        from amray.policy import compute_dtype

        return 2 if compute_dtype("auto", torch.device("cpu")) == torch.bfloat16 else 4
    return _BYTES[dtype]


def plan(cfg: Config, nodes: int, gpus_per_node: int, gpu_memory_gib: float, link_gbps: float = 400.0,
         shape: ModelShape | None = None) -> dict:
    """The plan as one dict (what `--json` prints); `fits` and `problems` say whether it runs."""
    shape = shape or model_shape(cfg.model.path, cfg.model.architecture, cfg.model.cache_dir)
    t, r = cfg.trainer, cfg.rollout
    learner_on_gpu, engine_on_gpu = t.num_gpus > 0, r.num_gpus > 0
    b = compute_bytes(t.dtype, learner_on_gpu)
    # a row is never split: the longest (prompt + response, up to max_model_len) is a micro-batch alone
    tokens = max(t.micro_batch_tokens, r.max_model_len)
    memory = learner_memory(shape, t.num_workers, b, tokens, t.logprob_chunk_tokens, t.gradient_checkpointing)
    engine_gpus = max(math.ceil(r.num_gpus), r.tensor_parallel_size) if engine_on_gpu else 0
    engine = engine_memory(shape, r.tensor_parallel_size, _BYTES.get(r.dtype, 2), r.max_model_len,
                           gpu_memory_gib if engine_on_gpu else None, r.gpu_memory_utilization, r.kv_cache_gib)
    learner_gpus = math.ceil(t.num_gpus) if learner_on_gpu else 0
    placement = place(nodes, gpus_per_node, r.num_engines, engine_gpus, t.num_workers, learner_gpus)
    sync_bytes = 4 * shape.params  # the float32 master weights, as the learner sends them

    problems = []
    if placement.unplaced:
        problems.append(f"placement: {placement.unplaced}")
    usable = USABLE_FRACTION * gpu_memory_gib * GIB
    if learner_on_gpu and memory["peak"] > usable:
        problems.append(f"learner rank memory: peak {memory['peak'] / GIB:.1f} GiB > {usable / GIB:.1f} GiB usable "
                        f"({USABLE_FRACTION:.0%} of {gpu_memory_gib:g}); more ranks (trainer.num_workers), fewer "
                        "trainer.micro_batch_tokens or trainer.gradient_checkpointing=true")
    if engine["concurrent_sequences"] < 1:
        problems.append(f"engine KV cache: {engine['kv_cache_per_gpu'] / GIB:.1f} GiB per GPU holds no sequence of "
                        f"rollout.max_model_len={r.max_model_len}; raise rollout.tensor_parallel_size or "
                        "gpu_memory_utilization")
    return {
        "model": {"name": shape.name, "parameters": shape.params, "layers": shape.layers, "hidden": shape.hidden,
                  "vocab": shape.vocab},
        "cluster": {"nodes": nodes, "gpus_per_node": gpus_per_node, "gpu_memory_gib": gpu_memory_gib,
                    "link_gbps": link_gbps, "gpus": nodes * gpus_per_node,
                    "gpus_for_engines": r.num_engines * engine_gpus, "gpus_for_learners": t.num_workers * learner_gpus,
                    "engine_nodes": sorted(set(placement.engine_nodes)),
                    "learner_nodes": sorted(set(placement.learner_nodes))},
        "learner": {"ranks": t.num_workers, "on_gpu": learner_on_gpu, "compute_bytes": b,
                    "micro_batch_tokens": tokens, "gradient_checkpointing": t.gradient_checkpointing,
                    "logprob_chunk_tokens": t.logprob_chunk_tokens, "usable_bytes": int(usable),
                    "per_rank_bytes": memory},
        "engine": {"count": r.num_engines, "tensor_parallel_size": r.tensor_parallel_size, "on_gpu": engine_on_gpu,
                   "max_model_len": r.max_model_len, **engine},
        "weight_sync": {"bytes": sync_bytes, "seconds": sync_seconds(sync_bytes, link_gbps)},
        "fits": not problems,
        "problems": problems,
    }
