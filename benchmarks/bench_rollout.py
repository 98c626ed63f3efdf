"""Rollout tokens/s through amray's engine actors vs the same vLLM engine called directly.

    .venv/bin/python benchmarks/bench_rollout.py [--model tiny|smollm2|DIR] [--prompts 32] [--samples 8] [--max-tokens 64]

Both sides use the same engine arguments (`amray.engine.engine_args`), the same prompts and
`ignore_eos` with a fixed max_tokens, so they generate the same number of tokens, and the same
threads (the actor's `rollout.threads` = the machine's cores, what the in-process engine uses). amray's side
goes through Ray: one request per sample to the engine actor, sampling logprobs returned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ray
    from transformers import AutoTokenizer

    from amray.config import RolloutConfig
    from amray.data.arithmetic import arithmetic_split
    from amray.models import resolve_model
    from amray.prompts import build_prompts
    from amray.engine import EnginePool, Request

    model_dir = str(resolve_model(args.model))
    rows, _ = arithmetic_split(args.prompts, 1, seed=3)
    prompts = build_prompts(AutoTokenizer.from_pretrained(model_dir), rows)
    # the engine actor gets every core, as the in-process engine does (rollout.threads)
    cfg = RolloutConfig(max_tokens=args.max_tokens, max_model_len=512, threads=os.cpu_count() or 1)
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_tokens": args.max_tokens, "ignore_eos": True}
    total_tokens = args.prompts * args.samples * args.max_tokens

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    pool = EnginePool(model_dir, cfg)
    pool.run([Request(p, f"w{i}", 0, sampling) for i, p in enumerate(prompts[:2])])  # warm up
    amray_s = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = pool.run([Request(p, f"g{i}", s, sampling) for i, p in enumerate(prompts) for s in range(args.samples)])
        amray_s.append(time.perf_counter() - t)
        assert sum(len(o.token_ids) for o in out) == total_tokens
    pool.shutdown()
    ray.shutdown()

    direct_s = asyncio.run(direct(model_dir, cfg, prompts, args.samples, sampling, args.repeats, total_tokens))
    best_amray, best_direct = min(amray_s), min(direct_s)
    result = {
        "model": args.model, "prompts": args.prompts, "samples_per_prompt": args.samples,
        "max_tokens": args.max_tokens, "tokens_per_run": total_tokens,
        "amray_tokens_per_s": round(total_tokens / best_amray, 1),
        "direct_vllm_tokens_per_s": round(total_tokens / best_direct, 1),
        "ratio_amray_over_direct": round(best_direct / best_amray, 3),
        "amray_runs_s": [round(x, 2) for x in amray_s], "direct_runs_s": [round(x, 2) for x in direct_s],
    }
    print(json.dumps(result, indent=2))


async def direct(model_dir, cfg, prompts, samples, sampling, repeats, total_tokens) -> list[float]:
    """The same engine in this process: AsyncLLM, n samples per prompt, logprobs on."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from amray.engine import engine_args

    llm = AsyncLLM.from_engine_args(engine_args(model_dir, cfg))
    params = SamplingParams(n=samples, logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY, **sampling)

    async def one(p):
        final = None
        async for out in llm.generate({"prompt_token_ids": p.token_ids}, params, uuid.uuid4().hex):
            final = out
        return sum(len(c.token_ids) for c in final.outputs)

    await asyncio.gather(*[one(p) for p in prompts[:2]])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        counts = await asyncio.gather(*[one(p) for p in prompts])
        times.append(time.perf_counter() - t)
        assert sum(counts) == total_tokens
    llm.shutdown()
    return times


if __name__ == "__main__":
    main()
