"""The capacity plan's arithmetic: learner memory per rank, engine KV capacity, weight-sync time,
GPU placement. Each formula counts what amray's code holds (tests/test_plan.py holds the learner
side to measurements of real FSDP2 ranks)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from amray.plan.shape import ModelShape

GIB = 1024**3
ENGINE_RESERVE_GIB = 2.0
"""Per engine GPU, besides weights and KV cache: CUDA context, the activations of a prefill batch,
CUDA graphs (vLLM profiles these at start; a few GiB is their usual size)."""
USABLE_FRACTION = 0.9
"""Share of a GPU's memory a learner rank may plan to use: the rest is the CUDA context and the
caching allocator's fragmentation."""


def layer_activation_bytes(shape: ModelShape, tokens: int, b: int) -> int:
    """What autograd keeps for backward in one decoder layer at `tokens` tokens, compute dtype of
    `b` bytes: per RMSNorm its float32 input, the normalised value and the scaled output (4 + 2b
    bytes per element) and its inverse RMS; q, k, v after RoPE, the attention output per sequence
    and its log-sum-exp; the o_proj input; the MLP's gate, up, SiLU(gate) and their product."""
    h, i = shape.hidden, shape.intermediate
    per_token = 2 * (h * (4 + 2 * b) + 4) + b * (3 * shape.q + 2 * shape.kv) + 4 * shape.heads + 4 * i * b
    return tokens * per_token


def learner_memory(shape: ModelShape, ranks: int, b: int, tokens: int, chunk: int,
                   checkpointing: bool) -> dict[str, int]:
    """Bytes one FSDP2 learner rank holds (see amray/policy.py, amray/sharded_init.py): float32
    parameter, gradient and AdamW shards; while computing, the root (embedding, head, norm) and two
    decoder layers gathered in the compute dtype; activations of a micro-batch of `tokens` tokens
    (every position trained, the worst case); the vocabulary projection of one logprob chunk."""
    shard = shape.sharded_params(ranks)
    extras = tokens * (shape.hidden * (4 + b) + 4 + 2 * shape.head_dim * b + 8) + tokens * shape.hidden * b
    layer = layer_activation_bytes(shape, tokens, b)
    full = shape.layers * layer + extras
    # checkpointed: each layer keeps only its input; backward recomputes one layer at a time
    ckpt = shape.layers * tokens * shape.hidden * b + layer + extras
    out = {"parameters": 4 * shard, "gradients": 4 * shard, "optimizer": 8 * shard,
           "working_parameters": b * (shape.root_params + 2 * shape.layer_params),
           "activations_without_checkpointing": full, "activations_with_checkpointing": ckpt,
           "activations": ckpt if checkpointing else full,
           # logits in the compute dtype and in float32, their softmax and its gradient
           "logprob_chunk": chunk * shape.vocab * (b + 12)}
    # backward: a layer's gradients gathered (compute dtype + a float32 copy to reduce-scatter);
    # at its end the root's, once the activations are gone
    layer_grads = shape.layer_params * (b + 4)
    root_grads = shape.root_params * (b + 4)
    static = out["parameters"] + out["gradients"] + out["optimizer"] + out["working_parameters"]
    out["peak"] = static + max(out["activations"] + out["logprob_chunk"] + layer_grads, root_grads)
    return out


def kv_bytes_per_token(shape: ModelShape, tp: int, b: int) -> int:
    """K and V of every layer, for the KV heads one tensor-parallel GPU holds (replicated when
    there are fewer KV heads than GPUs)."""
    return 2 * shape.layers * max(1, shape.kv_heads // tp) * shape.head_dim * b


def engine_memory(shape: ModelShape, tp: int, b: int, max_model_len: int, gpu_gib: float | None,
                  utilization: float, cpu_kv_gib: float) -> dict[str, float]:
    """Per engine GPU: weights, KV cache and how many sequences of `max_model_len` it holds at once
    (a CPU engine: its `rollout.kv_cache_gib`)."""
    per_token = kv_bytes_per_token(shape, tp, b)
    weights = shape.params * b / tp
    kv = cpu_kv_gib * GIB if gpu_gib is None else utilization * gpu_gib * GIB - weights - ENGINE_RESERVE_GIB * GIB
    return {"weights_per_gpu": weights, "kv_cache_per_gpu": kv, "kv_bytes_per_token_per_gpu": per_token,
            "concurrent_sequences": max(0, math.floor(kv / (per_token * max_model_len)))}


@dataclass
class Placement:
    engine_nodes: list[int]
    learner_nodes: list[int]
    unplaced: str


def place(nodes: int, gpus_per_node: int, engines: int, engine_gpus: int, learners: int,
          learner_gpus: int) -> Placement:
    """Engines first (a tensor-parallel engine's GPUs on one node, spread over nodes), then learner
    ranks packed node by node; `unplaced` says what did not fit."""
    free = [gpus_per_node] * nodes
    engine_nodes, learner_nodes = [], []
    if engine_gpus:
        for e in range(engines):
            room = [n for n in range(nodes) if free[n] >= engine_gpus]
            if not room:
                return Placement(engine_nodes, learner_nodes,
                                 f"engine {e + 1} of {engines}: no node has {engine_gpus} free GPUs "
                                 f"({nodes} nodes x {gpus_per_node} GPUs)")
            n = max(room, key=lambda n: free[n])
            free[n] -= engine_gpus
            engine_nodes.append(n)
    if learner_gpus:
        for r in range(learners):
            room = [n for n in range(nodes) if free[n] >= learner_gpus]
            if not room:
                return Placement(engine_nodes, learner_nodes,
                                 f"learner rank {r + 1} of {learners}: no GPU left ({nodes} nodes x "
                                 f"{gpus_per_node} GPUs; engines take {engines * engine_gpus})")
            n = room[0]
            free[n] -= learner_gpus
            learner_nodes.append(n)
    return Placement(engine_nodes, learner_nodes, "")


def sync_seconds(nbytes: int, link_gbps: float) -> float:
    """One broadcast of the weights over a link of `link_gbps` (NCCL's ring moves each byte over
    each link about once)."""
    return nbytes * 8 / (link_gbps * 1e9)
