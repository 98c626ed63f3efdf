"""Evaluate a model on reasoning benchmarks: pass@1 averaged over K samples per problem.

    python jobs/evaluate.py --model DIR --benchmarks aime2024,math500,gsm8k --data-dir DATA \\
        --samples 4 --output-dir OUT [--limit N] [--config FILE] [key=value ...]
    python jobs/evaluate.py --responses FILE --data-dir DATA --output-dir OUT [--benchmarks ...]

Benchmarks: aime2024 aime2025 amc2023 math500 gsm8k livecodebench humaneval mbpp ifeval, and
arena_hard: the model's answers judged pairwise against a baseline's by a served judge
(bench.arena_hard.judge.endpoint=URL; files in bench.arena_hard.questions / .baseline), reported as
a win rate with a 95% bootstrap interval; its answers and judgements go to OUT/arena_hard.jsonl,
which --responses re-judges.
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
from amray.config import Config, ConfigError  # noqa: E402
from amray.configtree import to_yaml  # noqa: E402
from amray.evaluation import arena_hard  # noqa: E402
from amray.evaluation.benchmarks import PAIRWISE, BenchmarkError, read_file, split_names  # noqa: E402
from amray.evaluation.config import load_eval_config  # noqa: E402
from amray.evaluation.harness import (generate_samples, load_problems, match_responses,  # noqa: E402
                                      prepare_tasks, read_responses, score_responses)
from amray.evaluation.report import (format_pairwise_table, format_table, pairwise_summary,  # noqa: E402
                                     summarize, write_results)
from amray.data.records import write_records  # noqa: E402
from amray.endpoint import EndpointClient, EndpointError  # noqa: E402
from amray.jobcli import keys_epilog, output_path, prepare_output_dir  # noqa: E402
from amray.models import resolve_model  # noqa: E402
from amray.rewards.pool import RewardPool  # noqa: E402
from amray.engine import EnginePool  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=keys_epilog(Config, load_eval_config(None, [])))
    p.add_argument("--model", help="model directory, `tiny` or `smollm2` (not needed with --responses)")
    p.add_argument("--benchmarks", help="comma-separated names (with --responses: default, all in the file)")
    p.add_argument("--data-dir", help="directory holding the benchmark files (required)")
    p.add_argument("--samples", type=int, help="samples per problem K (default eval.samples = 4)")
    p.add_argument("--output-dir", help="where config.yaml, samples.jsonl and summary.json go (required)")
    p.add_argument("--responses", help="JSONL of saved responses to re-score instead of generating")
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    p.add_argument("--config", help="YAML run config (rollout, reward, eval, bench sections)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.max_model_len=4096 (keys below)")
    args = p.parse_intermixed_args(argv)  # overrides may come before or after the flags
    if args.print_config:
        return args
    for name in ("data_dir", "output_dir"):
        if not getattr(args, name):
            p.error(f"--{name.replace('_', '-')} is required")
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
        if args.output_dir:
            cfg.log.output_dir = str(output_path(args.output_dir, "--output-dir"))
        if args.print_config:
            print(to_yaml(cfg), end="")
            return {}
        bench = cfg.bench
        k = args.samples or cfg.eval.samples
        limit = cfg.eval.limit if args.limit is None else args.limit
        responses, pairs, tasks, arena_answers = None, [], [], None
        names, pairwise = split_names(args.benchmarks) if args.benchmarks else (None, [])
        if args.responses:
            arena_answers = saved_arena_answers(args.responses, names, pairwise)
            if arena_answers is None:
                responses = read_responses(args.responses, names)
                names = names or list(dict.fromkeys(r.benchmark for r in responses))
                pairs = match_responses(load_problems(names, args.data_dir, bench), responses, limit)
            else:
                names, pairwise = [], [arena_hard.NAME]
        questions = arena_questions(cfg, args.data_dir, limit) if pairwise else None
        if arena_answers is not None and limit:  # only the answers to the first `limit` questions
            asked = {q.id for q in questions}
            arena_answers = [a for a in arena_answers if a.question_id in asked]
        if not args.responses:
            from transformers import AutoTokenizer

            problems = load_problems(names, args.data_dir, bench, limit)
            if questions is not None:
                problems[arena_hard.NAME] = arena_hard.problems(questions)
            model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
            tasks = prepare_tasks(problems, AutoTokenizer.from_pretrained(model_dir), cfg.eval, bench,
                                  cfg.rollout.max_model_len, cfg.data.system_prompt)
    except (ConfigError, BenchmarkError, EndpointError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")

    out = prepare_output_dir(cfg, "samples.jsonl, summary.json" + (", arena_hard.jsonl" if pairwise else ""))
    if pairs or not args.responses:  # re-judging arena_hard answers alone needs no Ray
        init_ray(cfg)
    rewards = RewardPool(cfg.reward)
    own_engines = None
    info = {"model": cfg.model.path if not args.responses else args.model,  # re-scoring: the model is unknown
            "data_dir": str(args.data_dir), "limit": limit}
    verified = [t for t in tasks if t.name not in PAIRWISE]
    try:
        if args.responses:
            samples = score_responses(rewards, pairs) if pairs else []
            info.update(mode="responses", responses=str(args.responses))
        else:
            engines = engines or (own_engines := EnginePool(model_dir, cfg.rollout))
            if verified:
                rewards.warmup()
            samples, seconds = generate_samples(engines, rewards, verified, k)
            arena = next((t for t in tasks if t.name == arena_hard.NAME), None)
            if arena is not None:
                start = time.perf_counter()
                arena_answers = arena_hard.generate_answers(engines, arena, k)
                seconds[arena.name] = round(time.perf_counter() - start, 2)
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
    if arena_answers is not None:
        try:
            info["pairwise"] = {arena_hard.NAME: judge_arena(cfg, questions, arena_answers, out)}
        except (BenchmarkError, EndpointError) as e:  # answers to unknown questions, a judge that cannot start
            sys.exit(f"error: {e}")
    info["wall_s"] = round(time.time() - t0, 1)
    path = write_results(out, samples, summary, info)
    if summary:
        print(format_table(summary))
    if arena_answers is not None:
        print(format_pairwise_table(info["pairwise"]))
    print(f"wrote {path} and {path.with_name('samples.jsonl')} ({info['wall_s']}s)")
    return {**info, "benchmarks": summary}


def arena_questions(cfg: Config, data_dir: str, limit: int) -> list:
    """Arena-Hard's questions and baseline answers, and a judge to ask: checked before any model loads."""
    if not cfg.bench.arena_hard.judge.endpoint:
        raise BenchmarkError("arena_hard needs a judge: set bench.arena_hard.judge.endpoint (an OpenAI-compatible "
                             "base URL) and bench.arena_hard.judge.model")
    EndpointClient(cfg.bench.arena_hard.judge, "bench.arena_hard.judge").close()  # a missing API key, named now
    return arena_hard.load_questions(data_dir, cfg.bench.arena_hard, limit)


def saved_arena_answers(path: str, names: list[str] | None, pairwise: list[str]) -> list | None:
    """The arena_hard answers of a --responses file (None when it holds other benchmarks' responses);
    an arena_hard.jsonl holds nothing else."""
    rows = read_file(Path(path)) if Path(path).is_file() else []
    arena_rows = [r for r in rows if isinstance(r, dict) and r.get("benchmark") in PAIRWISE]
    if not arena_rows:
        if pairwise:
            raise BenchmarkError(f"--responses {path}: no {arena_hard.NAME} answers "
                                 "(they are in a run's arena_hard.jsonl)")
        return None
    if len(arena_rows) != len(rows) or names:
        raise BenchmarkError(f"--responses {path}: {arena_hard.NAME} answers are re-judged from a file of their own "
                             f"(a run's arena_hard.jsonl), not with other benchmarks' responses")
    return arena_hard.read_answers(arena_rows, path)


def judge_arena(cfg: Config, questions: list, answers: list, out: Path) -> dict:
    """Judge the answers against the baseline; OUT/arena_hard.jsonl keeps every game; the win rate."""
    settings = cfg.bench.arena_hard
    judged = arena_hard.judge_answers(questions, answers, settings)
    records = [j.to_dict() for j in judged]
    write_records(out / f"{arena_hard.NAME}.jsonl", records)
    scores, errors = arena_hard.judged_scores(judged)
    summary = pairwise_summary(scores, errors, records, settings.bootstrap_rounds, settings.seed)
    return {**summary, "judge": f"{settings.judge.model or '?'} @ {settings.judge.endpoint}",
            "baseline": settings.baseline}


if __name__ == "__main__":
    main()
