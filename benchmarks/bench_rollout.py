"""Rollout tokens/s through amray's engine actors vs the same vLLM engine called directly.

    .venv/bin/python benchmarks/bench_rollout.py [--model tiny|smollm2|DIR] [--prompts 32] [--samples 8] [--max-tokens 64]

Both sides use the same engine arguments (`amray.engine.engine_args`), the same prompts and
`ignore_eos` with a fixed max_tokens, so they generate the same number of tokens, and the same
threads (the actor's `rollout.threads` = the machine's cores, what the in-process engine uses). amray's side
goes through Ray: one request per sample to the engine actor, sampling logprobs returned.
The two sides run alternately (amray, direct, amray, ...) with both engines up, so a slow phase
of the machine hits both; the ratio reported is the median of the paired runs' ratios (and the
ratio of the best runs beside it). On a 2-core machine single runs vary by +-25%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
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
    ap.add_argument("--repeats", type=int, default=7)
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
    loop = asyncio.new_event_loop()
    engine = loop.run_until_complete(Direct.start(model_dir, cfg, args.samples, sampling))
    pool.run([Request(p, f"w{i}", 0, sampling) for i, p in enumerate(prompts[:2])])  # warm up
    loop.run_until_complete(engine.run(prompts[:2]))
    amray_s, direct_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = pool.run([Request(p, f"g{i}", s, sampling) for i, p in enumerate(prompts) for s in range(args.samples)])
        amray_s.append(time.perf_counter() - t)
        assert sum(len(o.token_ids) for o in out) == total_tokens
        t = time.perf_counter()
        assert loop.run_until_complete(engine.run(prompts)) == total_tokens
        direct_s.append(time.perf_counter() - t)
    engine.llm.shutdown()
    pool.shutdown()
    ray.shutdown()

    best_amray, best_direct = min(amray_s), min(direct_s)
    result = {
        "model": args.model, "prompts": args.prompts, "samples_per_prompt": args.samples,
        "max_tokens": args.max_tokens, "tokens_per_run": total_tokens,
        "amray_tokens_per_s": round(total_tokens / statistics.median(amray_s), 1),
        "direct_vllm_tokens_per_s": round(total_tokens / statistics.median(direct_s), 1),
        "ratio_amray_over_direct": round(statistics.median(d / a for a, d in zip(amray_s, direct_s)), 3),
        "ratio_of_best_runs": round(best_direct / best_amray, 3),
        "amray_runs_s": [round(x, 2) for x in amray_s], "direct_runs_s": [round(x, 2) for x in direct_s],
    }
    print(json.dumps(result, indent=2))


class Direct:
    """The same engine in this process: AsyncLLM, n samples per prompt, logprobs on, each
    sample's text decoded."""

    @classmethod
    async def start(cls, model_dir, cfg, samples, sampling) -> Direct:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        from amray.engine import engine_args

        self = cls()
        self.llm = AsyncLLM.from_engine_args(engine_args(model_dir, cfg))
        # as the engine actor asks (no stop strings: text decoded once per sample, not per token)
        self.params = SamplingParams(n=samples, logprobs=0, output_kind=RequestOutputKind.FINAL_ONLY,
                                     detokenize=bool(sampling.get("stop")), **sampling)
        self.tokenizer = self.llm.get_tokenizer()
        return self

    async def run(self, prompts) -> int:
        async def one(p):
            final = None
            async for out in self.llm.generate({"prompt_token_ids": p.token_ids}, self.params, uuid.uuid4().hex):
                final = out
            texts = [self.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in final.outputs]
            assert all(isinstance(t, str) for t in texts)
            return sum(len(c.token_ids) for c in final.outputs)

        return sum(await asyncio.gather(*[one(p) for p in prompts]))


if __name__ == "__main__":
    main()
