"""Reward throughput and latency through the Ray pool: math rows and simple code rows.

    python benchmarks/bench_rewards.py [--workers 2] [--math 400] [--code 40]

Targets (AM-Thinking recipe on this 2-core machine): a math row median < 50 ms, a simple code row
median < 0.5 s including the sandbox start. "latency" is one row submitted alone and awaited
(what a sample waits in the GRPO driver when the pool is idle); "rows/s" submits all at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import ray

from amray.rewards import RewardConfig
from amray.rewards.pool import RewardPool

MATH500 = Path("/work/shared/evaldata/math500.jsonl")


def math_rows(n: int) -> list[dict]:
    if MATH500.exists():
        items = [json.loads(line) for line in MATH500.read_text().splitlines()][:n]
        answers = [str(item["answer"]) for item in items]
    else:
        answers = [f"\\frac{{{i}}}{{{i + 1}}}" for i in range(n)]
    rows = []
    for i in range(n):
        answer = answers[i % len(answers)]
        given = answer if i % 2 == 0 else "42"  # half right, half wrong
        rows.append({"id": i, "source": "math", "answer": answer,
                     "response": f"Reasoning for problem {i}... so the answer is $\\boxed{{{given}}}$."})
    return rows


def code_rows(n: int) -> list[dict]:
    code = "a, b = map(int, input().split())\nprint(a + b)"
    tests = {"stdin_stdout": [{"input": "1 2\n", "output": "3\n"}, {"input": "40 2\n", "output": "42\n"}]}
    return [{"id": i, "source": "code", "language": "python", "tests": tests,
             "response": f"Here is my solution:\n```python\n{code}\n```"} for i in range(n)]


def measure(pool: RewardPool, rows: list[dict], latency_rows: int) -> dict:
    latencies = []
    for row in rows[:latency_rows]:
        start = time.perf_counter()
        result = pool.result(pool.submit(row))
        latencies.append(time.perf_counter() - start)
        assert "error" not in result.info, result.info
    start = time.perf_counter()
    results = pool.score_many(rows)
    elapsed = time.perf_counter() - start
    return {"rows": len(rows), "rows_per_s": round(len(rows) / elapsed, 1),
            "latency_median_ms": round(1000 * statistics.median(latencies), 1),
            "latency_p90_ms": round(1000 * statistics.quantiles(latencies, n=10)[-1], 1),
            "worker_median_ms": round(1000 * statistics.median(r.info["elapsed_s"] for r in results), 1),
            "mean_reward": round(sum(r.reward for r in results) / len(results), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--math", type=int, default=400)
    parser.add_argument("--code", type=int, default=40)
    args = parser.parse_args()
    from amray.config import load_config
    from amray.rayenv import init_ray

    init_ray(load_config(None, []))  # joins a running cluster, or starts a local one
    pool = RewardPool(RewardConfig(num_workers=args.workers))
    pool.warmup()
    report = {"workers": args.workers,
              "math": measure(pool, math_rows(args.math), latency_rows=50),
              "code": measure(pool, code_rows(args.code), latency_rows=20)}
    pool.shutdown()
    ray.shutdown()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
