"""`python -m amray.plan --config CONFIG --nodes N --gpus-per-node 8 --gpu-memory-gib 80
[--link-gbps 400] [--json]`: exit 0 when the run fits, 1 when it does not."""

from __future__ import annotations

import argparse
import json
import sys

from amray.config import ConfigError, load_config
from amray.plan import plan
from amray.plan.arithmetic import ENGINE_RESERVE_GIB, GIB


def gib(n: float) -> str:
    return f"{n / GIB:8.2f} GiB"


def render(p: dict) -> str:
    m, c, lr, e, s = p["model"], p["cluster"], p["learner"], p["engine"], p["weight_sync"]
    mem = lr["per_rank_bytes"]
    where = "GPU" if lr["on_gpu"] else "CPU"
    lines = [
        f"model     {m['name']}: {m['parameters'] / 1e9:.2f}B parameters, {m['layers']} layers, "
        f"hidden {m['hidden']}, vocabulary {m['vocab']}",
        f"cluster   {c['nodes']} nodes x {c['gpus_per_node']} GPUs of {c['gpu_memory_gib']:g} GiB = {c['gpus']} GPUs; "
        f"engines use {c['gpus_for_engines']}, learners {c['gpus_for_learners']}",
        f"learner   {lr['ranks']} FSDP2 ranks on {where}, compute {8 * lr['compute_bytes']}-bit, micro-batch "
        f"{lr['micro_batch_tokens']} tokens, logprob chunk {lr['logprob_chunk_tokens']} positions; per rank:",
        f"  parameters (fp32 shard)     {gib(mem['parameters'])}",
        f"  gradients (fp32 shard)      {gib(mem['gradients'])}",
        f"  optimizer (AdamW, fp32)     {gib(mem['optimizer'])}",
        f"  gathered working params     {gib(mem['working_parameters'])}",
        f"  activations                 {gib(mem['activations_without_checkpointing'])} without checkpointing, "
        f"{gib(mem['activations_with_checkpointing']).strip()} with"
        f" ({'on' if lr['gradient_checkpointing'] else 'off'})",
        f"  logprob chunk               {gib(mem['logprob_chunk'])}",
        f"  peak                        {gib(mem['peak'])}" + (f" of {gib(lr['usable_bytes']).strip()} usable"
                                                               if lr["on_gpu"] else ""),
        f"engine    {e['count']} x TP {e['tensor_parallel_size']} on {'GPU' if e['on_gpu'] else 'CPU'}: weights "
        f"{gib(e['weights_per_gpu']).strip()} and KV cache {gib(e['kv_cache_per_gpu']).strip()} per GPU"
        + (f" (after {ENGINE_RESERVE_GIB:g} GiB runtime reserve)" if e["on_gpu"] else "")
        + f" = {e['concurrent_sequences']} concurrent sequences of {e['max_model_len']} tokens",
        f"sync      {s['bytes'] / 1e9:.1f} GB per update, {s['seconds']:.2f} s at {c['link_gbps']:g} Gb/s",
    ]
    lines.append("fits      yes" if p["fits"] else f"fits      NO: {p['problems'][0]}")
    lines += [f"          also: {q}" for q in p["problems"][1:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m amray.plan", description=__doc__)
    ap.add_argument("--config", required=True, help="run config (YAML)")
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--gpus-per-node", type=int, required=True)
    ap.add_argument("--gpu-memory-gib", type=float, required=True)
    ap.add_argument("--link-gbps", type=float, default=400.0, help="inter-node link speed (default 400)")
    ap.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. trainer.num_workers=128")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        p = plan(cfg, args.nodes, args.gpus_per_node, args.gpu_memory_gib, args.link_gbps)
    except (ConfigError, ValueError) as e:
        ap.error(str(e))
    print(json.dumps(p, indent=2) if args.json else render(p))
    return 0 if p["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
