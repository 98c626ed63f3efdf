"""Learner memory: what sharded initialisation saves, and how well `amray.plan` predicts a rank.

    .venv/bin/python benchmarks/bench_learner_memory.py [--ranks 2 4 8] [--baseline] [--output OUT.json]

Setup: the peak resident memory of each learner rank while it builds its model (VmHWM), for a
302M-parameter random Qwen2 minus the same rank's with the tiny model (the process, imports and
process group alike), as a fraction of the full float32 model bytes, at each world size.
Goal: <= 1.3 / world_size + 0.05. `--baseline` measures the old build (whole model on every rank,
then shard) the same way. Then, at 2 ranks, one GRPO update: the plan's per-rank parameter,
gradient, optimizer and activation bytes against the tensors the rank holds, and the step's peak
RSS against the plan's total.
"""

from __future__ import annotations

import argparse
import json
import sys
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
from amray.models import RANDOM_300M, build_tiny_model  # noqa: E402
from amray.plan import learner_memory, model_shape  # noqa: E402

GIB = 1024**3


def setup_peaks(model_dir: Path, ranks: int, baseline: bool) -> list[int]:
    """Each rank's peak RSS during setup."""
    cfg = load_config(None, [f"trainer.num_workers={ranks}", "trainer.num_cpus=0.25"])
    if baseline:
        from baseline_learner import BaselineLearnerRank

        actors = [BaselineLearnerRank.options(num_cpus=0.25).remote(r, ranks, str(model_dir), 4096, 1)
                  for r in range(ranks)]
        addr, port = ray.get(actors[0].address.remote())
        peaks = ray.get([a.setup.remote(addr, port) for a in actors])
        for a in actors:
            ray.kill(a)
        return peaks
    learners = LearnerGroup(str(model_dir), cfg.trainer)
    peaks = [info["setup_peak_rss"] for info in learners.setup_info]
    learners.shutdown()
    return peaks


def grpo_batch(rows: int, length: int) -> TrainBatch:
    rng = np.random.default_rng(0)
    tokens = [rng.integers(3, 300, length) for _ in range(rows)]
    masks = [np.r_[np.zeros(length // 3), np.ones(length - length // 3)].astype(np.float32) for _ in range(rows)]
    return TrainBatch(tokens, masks, rng.normal(size=rows).astype(np.float32), [np.zeros(length, np.float32)] * rows)


def step_vs_plan(model_dir: Path, tokens: int) -> dict:
    """One update at 2 ranks (one packed micro-batch of `tokens` per rank): measured vs plan."""
    cfg = load_config(None, ["trainer.num_workers=2", "trainer.dtype=float32", f"trainer.micro_batch_tokens={tokens}"])
    learners = LearnerGroup(str(model_dir), cfg.trainer)
    base = max(info["setup_peak_rss"] for info in learners.setup_info)
    measured = learners.measure_memory(grpo_batch(4, tokens // 2), GRPOLoss())[0]
    learners.shutdown()
    plan = learner_memory(model_shape(str(model_dir)), 2, 4, tokens, cfg.trainer.logprob_chunk_tokens, False)
    keys = ("parameters", "gradients", "optimizer", "activations")
    out = {k: {"plan": plan[k], "measured": measured[k], "error": plan[k] / measured[k] - 1} for k in keys}
    total = sum(measured[k] for k in keys)
    out["total"] = {"plan": sum(plan[k] for k in keys), "measured": total,
                    "error": sum(plan[k] for k in keys) / total - 1}
    # the step's peak RSS above the bare process (tiny-model setup) vs the plan's peak
    out["peak_rss_above_setup"] = {"plan_peak_minus_params": plan["peak"] - plan["parameters"],
                                   "measured": measured["peak_rss"] - base}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ranks", type=int, nargs="*", default=[2, 4, 8], help="world sizes of the setup measurement (none: skip it)")
    ap.add_argument("--baseline", action="store_true", help="also measure the old whole-model-then-shard build")
    ap.add_argument("--step-tokens", type=int, default=512, help="micro-batch tokens of the plan comparison (0: skip)")
    ap.add_argument("--output", default="")
    args = ap.parse_args()
    cache = ROOT / load_config(None).model.cache_dir
    tiny, big = build_tiny_model(cache / "tiny"), build_tiny_model(cache / "random-302m", **RANDOM_300M)
    full = 4 * model_shape(str(big)).params
    init_ray(load_config(None))
    report: dict = {"model_bytes_fp32": full, "setup": {}}
    for ranks in args.ranks:
        for kind in ["sharded"] + (["baseline"] if args.baseline else []):
            b = setup_peaks(big, ranks, kind == "baseline")
            t = setup_peaks(tiny, ranks, kind == "baseline")
            fractions = [(x - y) / full for x, y in zip(b, t)]
            row = {"max_fraction": max(fractions), "mean_fraction": float(np.mean(fractions)),
                   "goal": 1.3 / ranks + 0.05, "plan_fraction": 4 * model_shape(str(big)).sharded_params(ranks) / full}
            report["setup"][f"{kind}@{ranks}"] = row
            print(f"{kind:8s} {ranks} ranks: setup peak RSS above tiny = {row['max_fraction']:.3f} of the fp32 model "
                  f"(worst rank; mean {row['mean_fraction']:.3f}); goal <= {row['goal']:.3f}; plan "
                  f"{row['plan_fraction']:.3f}", flush=True)
    if args.step_tokens:
        for name, model_dir in (("tiny", tiny), ("302m", big)):
            r = step_vs_plan(model_dir, args.step_tokens)
            report[f"step_vs_plan_{name}"] = r
            print(f"{name}: one update at 2 ranks, {args.step_tokens} tokens per rank: " + ", ".join(
                f"{k} plan {v['plan'] / 2**20:.1f} MiB vs {v['measured'] / 2**20:.1f} ({100 * v['error']:+.1f}%)"
                for k, v in r.items() if "error" in v), flush=True)
            p = r["peak_rss_above_setup"]
            print(f"    step peak RSS above setup {p['measured'] / 2**20:.0f} MiB; plan peak minus parameters "
                  f"{p['plan_peak_minus_params'] / 2**20:.0f} MiB", flush=True)
    ray.shutdown()
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
