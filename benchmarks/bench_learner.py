"""Learner throughput on the GRPO workload of issue 13: SmolLM2-135M-Instruct, 2 FSDP2 ranks, one
update on 16 prompts x 8 samples (prompts 60-110 tokens, responses 40-256 with 30% cut at 256:
about 30% prompt tokens).

    .venv/bin/python benchmarks/bench_learner.py [--variants before,fp32,padded,rows,after] [--mismatch] [--output OUT.json]

Variants (each a fresh learner group, one warm-up update on 16 rows, then one timed update):
  before   the learner before this work (benchmarks/baseline_learner.py): fp32, padded rows,
           logits at every position; micro_batch_tokens 2048 (4096 was OOM-killed at ~8 GB/rank)
  fp32     today's learner in float32 (packed, logits at trained positions only)
  padded   configs/smollm2_cpu.yaml's trainer with trainer.packing=false
  rows     configs/smollm2_cpu.yaml's trainer with trainer.share_prompts=false (each row its own prompt)
  after    configs/smollm2_cpu.yaml's trainer (trainer.dtype=auto: bf16 on a CPU with AVX512-BF16;
           packed, each group's prompt once per micro-batch)
Reports learner tokens/s (all the rows' tokens, prompts counted once per row as in TRL; and trained tokens), seconds, peak RSS per rank (worst).
`--mismatch`: mean |learner - vLLM| logprob over a worked GSM8K-style answer, vLLM in float32,
the learner in float32 and in its configured dtype.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from amray.batch import TrainBatch  # noqa: E402
from amray.cluster import init_ray  # noqa: E402
from amray.config import load_config  # noqa: E402
from amray.grpo import GRPOLoss  # noqa: E402
from amray.learner import LearnerGroup  # noqa: E402
from amray.memory import peak_rss_bytes, reset_peak_rss  # noqa: E402
from amray.microbatch import balance  # noqa: E402
from amray.models import resolve_model  # noqa: E402
from workloads import grpo_batch  # noqa: E402

CONFIG = ROOT / "configs/smollm2_cpu.yaml"
ANSWER = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
          "How many clips did Natalia sell altogether in April and May?",
          "In April she sold 48 clips. In May she sold half as many: 48 / 2 = 24 clips. Altogether she sold "
          "48 + 24 = 72 clips in April and May. The answer is \\boxed{72}.")


class Baseline:
    """The old learner ranks behind the two calls the benchmark makes."""

    def __init__(self, model_dir: str, ranks: int, micro_batch_tokens: int) -> None:
        from baseline_learner import BaselineLearnerRank

        self.ranks = [BaselineLearnerRank.options(num_cpus=0.5).remote(r, ranks, model_dir, micro_batch_tokens, 1)
                      for r in range(ranks)]
        addr, port = ray.get(self.ranks[0].address.remote())
        ray.get([r.setup.remote(addr, port) for r in self.ranks])

    def step(self, batch: TrainBatch, loss: GRPOLoss) -> int:
        shards = [batch.select(p) for p in balance([len(t) for t in batch.tokens], len(self.ranks))]
        return max(r["peak_rss"] for r in ray.get([a.train_step.remote(s, loss) for a, s in zip(self.ranks, shards)]))

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)


class Current:
    def __init__(self, model_dir: str, overrides: list[str]) -> None:
        self.group = LearnerGroup(model_dir, load_config(CONFIG, overrides).trainer)

    def step(self, batch: TrainBatch, loss: GRPOLoss) -> int:
        ray.get([r.__ray_call__.remote(lambda _: reset_peak_rss()) for r in self.group.ranks])
        self.group.train_step(batch, loss)
        return max(ray.get([r.__ray_call__.remote(lambda _: peak_rss_bytes()) for r in self.group.ranks]))

    def shutdown(self) -> None:
        self.group.shutdown()


VARIANTS = {
    "before": lambda d: Baseline(d, 2, 2048),
    "fp32": lambda d: Current(d, ["trainer.dtype=float32"]),
    "padded": lambda d: Current(d, ["trainer.packing=false"]),
    "rows": lambda d: Current(d, ["trainer.share_prompts=false"]),
    "after": lambda d: Current(d, []),
}


def measure(name: str, model_dir: str, batch: TrainBatch) -> dict:
    learner = VARIANTS[name](model_dir)
    try:
        learner.step(batch.select(list(range(0, len(batch), 8))), GRPOLoss())  # warm-up: 16 rows
        t0 = time.perf_counter()
        rss = learner.step(batch, GRPOLoss())
        seconds = time.perf_counter() - t0
    finally:
        learner.shutdown()
    tokens = sum(len(t) for t in batch.tokens)
    return {"seconds": seconds, "tokens_per_s": tokens / seconds, "trained_tokens_per_s": batch.trained_tokens / seconds,
            "peak_rss_gib": rss / 2**30}


def mismatch(model_dir: str) -> dict:
    """Mean and max |learner - vLLM| logprob of the answer tokens, vLLM serving float32."""
    from transformers import AutoTokenizer

    from amray.engine import EnginePool

    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": ANSWER[0]}], add_generation_prompt=True)
    prompt = list(prompt["input_ids"]) if hasattr(prompt, "keys") else list(prompt)
    ids = prompt + tok(ANSWER[1] + "<|im_end|>", add_special_tokens=False)["input_ids"]
    cfg = load_config(CONFIG, ["rollout.dtype=float32"])
    engines = EnginePool(model_dir, cfg.rollout)
    try:
        vllm = engines.sequence_logprobs(ids, len(prompt))
    finally:
        engines.shutdown()
    out = {}
    for dtype in ("float32", cfg.trainer.dtype):
        group = LearnerGroup(model_dir, load_config(CONFIG, [f"trainer.dtype={dtype}"]).trainer)
        try:
            diff = np.abs(group.sequence_logprobs(ids, len(prompt)) - vllm)
            out[group.setup_info[0]["dtype"]] = {"mean": float(diff.mean()), "max": float(diff.max()),
                                                 "tokens": len(diff)}
        finally:
            group.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="before,fp32,padded,rows,after")
    ap.add_argument("--mismatch", action="store_true")
    ap.add_argument("--output", default="")
    args = ap.parse_args()
    cfg = load_config(CONFIG)
    model_dir = str(resolve_model("smollm2", ROOT / cfg.model.cache_dir))
    init_ray(cfg)
    batch = grpo_batch()
    prompt_share = 1 - batch.trained_tokens / sum(len(t) - 1 for t in batch.tokens)
    print(f"workload: {len(batch)} rows, {sum(len(t) for t in batch.tokens)} tokens, {prompt_share:.0%} prompt; "
          f"trainer from {CONFIG.name}: {cfg.trainer.dtype}, micro_batch_tokens {cfg.trainer.micro_batch_tokens}",
          flush=True)
    report = {}
    for name in args.variants.split(","):
        try:
            r = report[name] = measure(name, model_dir, batch)
        except ray.exceptions.RayError as e:  # e.g. a rank killed by Ray's memory monitor: report, go on
            report[name] = {"error": str(e).splitlines()[0]}
            print(f"{name:7s} failed: {report[name]['error']}", flush=True)
            continue
        print(f"{name:7s} {r['seconds']:7.1f} s  {r['tokens_per_s']:7.0f} tokens/s  ({r['trained_tokens_per_s']:6.0f} "
              f"trained tokens/s)  peak RSS {r['peak_rss_gib']:.2f} GiB per rank", flush=True)
    if args.mismatch:
        report["mismatch_vs_vllm_fp32"] = m = mismatch(model_dir)
        for dtype, v in m.items():
            print(f"learner {dtype} vs vLLM float32: mean |dlogp| {v['mean']:.4f}, max {v['max']:.3f} "
                  f"over {v['tokens']} tokens", flush=True)
    ray.shutdown()
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
