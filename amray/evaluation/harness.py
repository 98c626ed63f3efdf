"""Run benchmarks through the rollout engines and the reward pool, or re-score saved responses.

    problems = load_problems(["gsm8k", "aime2024"], data_dir, bench)     # every row checked
    tasks = prepare_tasks(problems, tokenizer, cfg.eval, bench, max_model_len=4096)
    samples, seconds = generate_samples(engines, rewards, tasks, k=4)    # model path
    pairs = match_responses(problems, read_responses(path))             # saved-responses path:
    samples = score_responses(rewards, pairs)                            # no model needed

A run's own held-out set is one more task (`heldout_task`). Both paths build the same reward row (the problem's row + `response`) and send it to the same
`RewardPool`; generation goes through `generate_and_score`, exactly as GRPO rollouts do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from amray.batch import Prompt
from amray.config import BenchConfig, EvalConfig
from amray.engine import EnginePool
from amray.evaluation.benchmarks import REGISTRY, BenchmarkError, Problem, load_benchmark, read_file
from amray.evaluation.config import sampling_for
from amray.evaluation.report import ScoredSample, flat_metrics, summarize
from amray.prompts import build_prompts
from amray.rewards.pool import RewardPool
from amray.rollout import generate_and_score


@dataclass
class BenchmarkTask:
    """One benchmark ready to run: its problems, their tokenized chat prompts, its sampling."""

    name: str
    problems: list[Problem]
    prompts: list[Prompt]
    temperature: float
    top_p: float
    max_tokens: int


@dataclass
class SavedResponse:
    benchmark: str
    problem_id: str | int
    sample: int
    response: str
    extra: dict = field(default_factory=dict)
    """`response_tokens`, `truncated`, `finish_reason` when the file has them (a samples.jsonl does)."""


def load_problems(names: list[str], data_dir: str | Path, bench: BenchConfig | None = None,
                  limit: int = 0) -> dict[str, list[Problem]]:
    """Every named benchmark's problems, all rows checked (first, before a model is loaded)."""
    return {name: load_benchmark(name, data_dir, bench, limit) for name in names}


def prepare_tasks(problems: dict[str, list[Problem]], tokenizer, eval_cfg: EvalConfig, bench: BenchConfig,
                  max_model_len: int = 0, system_prompt: str = "") -> list[BenchmarkTask]:
    """Chat prompts and sampling of each benchmark; a prompt that leaves no room to answer within
    the engine's context stops the run here, before any generation."""
    tasks = []
    for name, items in problems.items():
        prompts = build_prompts(tokenizer, [p.row for p in items], system_prompt)
        for problem, prompt in zip(items, prompts):
            if max_model_len and len(prompt.token_ids) >= max_model_len:
                raise BenchmarkError(f"benchmark {name}: problem {problem.problem_id!r} has a {len(prompt.token_ids)}-token "
                                     f"prompt, no room to answer within rollout.max_model_len={max_model_len}; raise it")
        temperature, top_p, max_tokens = sampling_for(name, eval_cfg, bench)
        if max_tokens < 1:
            raise BenchmarkError(f"benchmark {name}: max_tokens must be >= 1, got {max_tokens}")
        tasks.append(BenchmarkTask(name, items, prompts, temperature, top_p, max_tokens))
    return tasks


def generate_samples(engines: EnginePool, rewards: RewardPool, tasks: list[BenchmarkTask], k: int,
                     log=print, progress: bool | None = None) -> tuple[list[ScoredSample], dict[str, float]]:
    """k samples of every problem, each scored the moment it lands; benchmark after benchmark.
    Returns the samples and each benchmark's seconds (generation + scoring). Requests are not
    seeded one by one (the engines are, at start: rollout.seed), as in GRPO rollouts.
    `progress`: a bar per benchmark (default: when there is a `log`)."""
    show = bool(log) if progress is None else progress
    if k < 1:
        raise ValueError(f"samples per problem must be >= 1, got {k}")
    out: list[ScoredSample] = []
    seconds: dict[str, float] = {}
    for task in tasks:
        t0 = time.perf_counter()
        sampling = engines.sampling(task.temperature, task.top_p, task.max_tokens)
        bar = None
        if show:  # a long benchmark (GSM8K: 1319 problems) shows how far it got
            from tqdm import tqdm

            bar = tqdm(total=len(task.prompts) * k, desc=f"eval {task.name}", unit="sample", mininterval=10,
                       leave=bool(log))  # inside GRPO (no log) the bar goes when done, under the step bar
        rollout = generate_and_score(engines, rewards, task.prompts, k, sampling,
                                     on_samples=bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        for problem, group in zip(task.problems, rollout.groups):
            for sample, reward, info in zip(group.samples, group.rewards, group.reward_infos):
                out.append(ScoredSample(task.name, problem.problem_id, sample.sample_index, sample.text, float(reward),
                                        info, len(sample.token_ids), sample.truncated, sample.finish_reason))
        seconds[task.name] = round(time.perf_counter() - t0, 2)
        if log:
            log(f"{task.name}: {len(task.problems)} problems x {k} samples in {seconds[task.name]:.1f}s")
    return out, seconds


def read_responses(path: str | Path, names: list[str] | None = None) -> list[SavedResponse]:
    """Saved generations ({benchmark, problem_id, sample, response} per line), each line checked;
    with `names`, lines of other benchmarks are left out."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"--responses {path}: file not found")
    out = []
    for n, row in enumerate(read_file(path), 1):
        where = f"{path} line {n}"
        if not isinstance(row, dict):
            raise BenchmarkError(f"{where}: expected a JSON object")
        for key, types in (("benchmark", str), ("problem_id", (str, int)), ("sample", int), ("response", str)):
            if key not in row or not isinstance(row[key], types) or isinstance(row[key], bool):
                raise BenchmarkError(f"{where}: field `{key}` is missing or not a {getattr(types, '__name__', 'string or integer')}")
        if row["benchmark"] not in REGISTRY:
            raise BenchmarkError(f"{where}: unknown benchmark {row['benchmark']!r} (known: {', '.join(REGISTRY)})")
        if row["sample"] < 0:
            raise BenchmarkError(f"{where}: field `sample` must be >= 0")
        if names is None or row["benchmark"] in names:
            extra = {k: row[k] for k in ("response_tokens", "truncated", "finish_reason") if row.get(k) is not None}
            out.append(SavedResponse(row["benchmark"], row["problem_id"], row["sample"], row["response"], extra))
    if not out:
        raise BenchmarkError(f"{path}: no responses" + (f" for {', '.join(names)}" if names else ""))
    return out


def match_responses(problems: dict[str, list[Problem]], responses: list[SavedResponse],
                    limit: int = 0) -> list[tuple[Problem, SavedResponse]]:
    """Pair each response with its problem; each answered problem must have samples 0..K-1, with
    one K per benchmark. With `limit`, only the benchmark's first `limit` problems are kept."""
    pairs = []
    for name, items in problems.items():
        order = {str(p.problem_id): i for i, p in enumerate(items)}
        by_problem: dict[str, dict[int, SavedResponse]] = {}
        for r in responses:
            if r.benchmark != name:
                continue
            if str(r.problem_id) not in order:
                raise BenchmarkError(f"responses: {name} has no problem {r.problem_id!r}")
            if limit and order[str(r.problem_id)] >= limit:
                continue
            samples = by_problem.setdefault(str(r.problem_id), {})
            if r.sample in samples:
                raise BenchmarkError(f"responses: {name} problem {r.problem_id!r} sample {r.sample} appears twice")
            samples[r.sample] = r
        if not by_problem:
            raise BenchmarkError(f"responses: none for benchmark {name}" + (f" among its first {limit} problems" if limit else ""))
        counts = {pid: sorted(s) for pid, s in by_problem.items()}
        k = max((len(s) for s in counts.values()), default=0)
        for pid, indices in counts.items():
            if indices != list(range(k)):
                raise BenchmarkError(f"responses: {name} problem {pid!r} has samples {indices[:8]}, "
                                     f"expected 0..{k - 1} like the other problems of {name}")
        for pid in sorted(by_problem, key=order.__getitem__):
            problem = items[order[pid]]
            pairs += [(problem, by_problem[pid][s]) for s in range(k)]
    return pairs


def score_responses(rewards: RewardPool, pairs: list[tuple[Problem, SavedResponse]]) -> list[ScoredSample]:
    """Re-score saved generations (paired by `match_responses`) through the reward pool; no model."""
    results = rewards.score_many([dict(problem.row, response=r.response) for problem, r in pairs])
    out = []
    for (problem, r), result in zip(pairs, results):
        truncated = r.extra.get("truncated")
        if truncated is None and "finish_reason" in r.extra:
            truncated = r.extra["finish_reason"] == "length"
        out.append(ScoredSample(problem.benchmark, problem.problem_id, r.sample, r.response, result.reward,
                                result.info, r.extra.get("response_tokens"), truncated, r.extra.get("finish_reason")))
    return out


def evaluate_benchmarks(engines: EnginePool, rewards: RewardPool, tasks: list[BenchmarkTask], k: int,
                        progress: bool = True) -> dict[str, float]:
    """For the GRPO driver: flat metrics such as `eval/gsm8k/pass@1`, `eval/heldout/pass@1`;
    `progress`: a bar per task while it runs (the driver passes log.progress)."""
    samples, _ = generate_samples(engines, rewards, tasks, k, log=None, progress=progress)
    return flat_metrics(summarize(samples))


HELDOUT = "heldout"
"""The name a run's own held-out set (`data.eval`) is evaluated and logged under."""


def heldout_task(prompts: list[Prompt], eval_cfg: EvalConfig, limit: int = 0) -> BenchmarkTask:
    """A run's held-out prompts as one more benchmark (`eval/heldout/pass@1`, ...), sampled with
    the `eval` section; problems keep their row ids (else their position)."""
    prompts = prompts[:limit] if limit else prompts
    ids = [p.row.get("id") for p in prompts]
    if None in ids or len({str(i) for i in ids}) < len(ids):  # no usable id: the position is the problem id
        ids = list(range(len(prompts)))
    problems = [Problem(HELDOUT, pid, p.row) for pid, p in zip(ids, prompts)]
    return BenchmarkTask(HELDOUT, problems, prompts, eval_cfg.temperature, eval_cfg.top_p, eval_cfg.max_tokens)
