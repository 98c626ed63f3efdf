"""Evaluate a model on reasoning benchmarks: pass@1 averaged over K samples per problem.

    python jobs/evaluate.py --model DIR --benchmarks aime2024,math500,gsm8k --data-dir DATA \\
        --samples 4 --output-dir OUT [--limit N] [--config FILE] [key=value ...]
    python jobs/evaluate.py --responses FILE --data-dir DATA --output-dir OUT [--benchmarks ...]

Benchmarks: aime2024 aime2025 amc2023 math500 gsm8k livecodebench humaneval mbpp ifeval.
Sampling: eval.temperature / eval.top_p / eval.max_tokens (0.6 / 0.95 / 32768 here; on this command
line rollout.* means the same), one benchmark apart with bench.NAME.*, e.g.
bench.gsm8k.max_tokens=1024 bench.livecodebench.date_from=2024-10-01. Generation also stops at
rollout.max_model_len (raise it for long reasoning). --model takes a directory, `tiny` or `smollm2`.
--responses re-scores saved generations ({benchmark, problem_id, sample, response} per line, e.g. an
earlier samples.jsonl) with no model. Writes OUT/samples.jsonl and OUT/summary.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amray.cluster import init_ray  # noqa: E402
from amray.config import ConfigError  # noqa: E402
from amray.evaluation.benchmarks import BenchmarkError, parse_names  # noqa: E402
from amray.evaluation.config import load_eval_config  # noqa: E402
from amray.evaluation.harness import (generate_samples, load_problems, match_responses,  # noqa: E402
                                      prepare_tasks, read_responses, score_responses)
from amray.evaluation.report import format_table, summarize, write_results  # noqa: E402
from amray.models import resolve_model  # noqa: E402
from amray.rewards.pool import RewardPool  # noqa: E402
from amray.engine import EnginePool  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model directory, `tiny` or `smollm2` (not needed with --responses)")
    p.add_argument("--benchmarks", help="comma-separated names (with --responses: default, all in the file)")
    p.add_argument("--data-dir", required=True, help="directory holding the benchmark files")
    p.add_argument("--samples", type=int, help="samples per problem K (default eval.samples = 4)")
    p.add_argument("--output-dir", required=True, help="where samples.jsonl and summary.json go")
    p.add_argument("--responses", help="JSONL of saved responses to re-score instead of generating")
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    p.add_argument("--config", help="YAML run config (rollout, reward, eval, bench sections)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.max_model_len=4096")
    args = p.parse_intermixed_args(argv)  # overrides may come before or after the flags
    if not args.responses and not args.model:
        p.error("--model is required (or --responses FILE to re-score saved generations)")
    if not args.responses and not args.benchmarks:
        p.error("--benchmarks is required, e.g. --benchmarks aime2024,gsm8k")
    if args.samples is not None and args.samples < 1:
        p.error(f"--samples must be >= 1, got {args.samples}")
    return args


def main(argv: list[str] | None = None, engines=None) -> dict:
    """`engines`: an EnginePool already serving the model (tests); default: start one from --model."""
    args = parse_args(argv)
    t0 = time.time()
    overrides = list(args.overrides) + ([f"model.path={args.model}"] if args.model else [])
    try:
        cfg = load_eval_config(args.config, overrides)
        bench = cfg.bench
        k = args.samples or cfg.eval.samples
        limit = cfg.eval.limit if args.limit is None else args.limit
        responses = None
        if args.responses:
            names = parse_names(args.benchmarks) if args.benchmarks else None
            responses = read_responses(args.responses, names)
            names = names or list(dict.fromkeys(r.benchmark for r in responses))
            pairs = match_responses(load_problems(names, args.data_dir, bench), responses, limit)
        else:
            from transformers import AutoTokenizer

            names = parse_names(args.benchmarks)
            problems = load_problems(names, args.data_dir, bench, limit)
            model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
            tasks = prepare_tasks(problems, AutoTokenizer.from_pretrained(model_dir), cfg.eval, bench,
                                  cfg.rollout.max_model_len, cfg.data.system_prompt)
    except (ConfigError, BenchmarkError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")

    init_ray(cfg)
    rewards = RewardPool(cfg.reward)
    own_engines = None
    info = {"model": cfg.model.path if responses is None else args.model,  # re-scoring: the model is unknown
            "data_dir": str(args.data_dir), "limit": limit}
    try:
        if responses is not None:
            samples = score_responses(rewards, pairs)
            info.update(mode="responses", responses=str(args.responses))
        else:
            engines = engines or (own_engines := EnginePool(model_dir, cfg.rollout))
            rewards.warmup()
            samples, seconds = generate_samples(engines, rewards, tasks, k)
            info.update(mode="generate", samples_per_problem=k, engine_seed=cfg.rollout.seed, backend=engines.backend,
                        generate_s=seconds,
                        max_model_len=cfg.rollout.max_model_len, system_prompt=cfg.data.system_prompt,
                        sampling={t.name: {"temperature": t.temperature, "top_p": t.top_p, "max_tokens": t.max_tokens}
                                  for t in tasks})
    finally:
        rewards.shutdown()
        if own_engines is not None:
            own_engines.shutdown()
    summary = summarize(samples)
    info["wall_s"] = round(time.time() - t0, 1)
    path = write_results(args.output_dir, samples, summary, info)
    print(format_table(summary))
    print(f"wrote {path} and {path.with_name('samples.jsonl')} ({info['wall_s']}s)")
    return {**info, "benchmarks": summary}


if __name__ == "__main__":
    main()
