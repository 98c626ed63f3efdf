"""Scores per benchmark: pass@1 averaged over the K samples of each problem, its standard error
across problems, pass@K, response length and truncation; written as samples.jsonl + summary.json.
Pairwise benchmarks (Arena-Hard) get a win rate against their baseline with a bootstrap interval.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amray.batch import passed
from amray.data.records import write_records


@dataclass
class ScoredSample:
    """One response and its reward: a line of samples.jsonl."""

    benchmark: str
    problem_id: str | int
    sample: int
    response: str
    reward: float
    reward_info: dict
    response_tokens: int | None = None
    """Generated tokens (None when re-scoring responses saved without it)."""
    truncated: bool | None = None
    """Cut at the token budget or the context (None when unknown)."""
    finish_reason: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def pass_stats(passed: np.ndarray) -> tuple[float, float, float]:
    """(pass@1 averaged over the k samples of each problem, its standard error across problems,
    pass@k) of a problems x k matrix of booleans."""
    per_problem = passed.mean(axis=1)
    stderr = float(per_problem.std(ddof=1) / math.sqrt(len(per_problem))) if len(per_problem) > 1 else 0.0
    return float(per_problem.mean()), stderr, float(passed.any(axis=1).mean())


def summarize(samples: list[ScoredSample]) -> dict[str, dict]:
    """{benchmark: metrics}. A sample passes when its reward is 1 (every source scores 0/1 here)."""
    groups: dict[str, dict[str, list[ScoredSample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        groups[s.benchmark][str(s.problem_id)].append(s)
    summary = {}
    for name, problems in groups.items():
        ks = {len(v) for v in problems.values()}
        if len(ks) != 1:
            raise ValueError(f"{name}: problems have different sample counts {sorted(ks)}")
        k = ks.pop()
        ok = np.array([passed([s.reward for s in sorted(v, key=lambda s: s.sample)]) for v in problems.values()])
        pass1, stderr, pass_k = pass_stats(ok)
        flat = [s for v in problems.values() for s in v]
        tokens = [s.response_tokens for s in flat if s.response_tokens is not None]
        truncated = [s.truncated for s in flat if s.truncated is not None]
        summary[name] = {
            "pass@1": pass1,
            "pass@1_stderr": stderr,
            "pass@k": pass_k,
            "k": k,
            "problems": len(ok),
            "mean_response_tokens": float(np.mean(tokens)) if len(tokens) == len(flat) else None,
            "mean_response_chars": float(np.mean([len(s.response) for s in flat])),
            "truncation_rate": float(np.mean(truncated)) if len(truncated) == len(flat) else None,
            "scoring_errors": sum("error" in s.reward_info for s in flat),
        }
    return summary


def flat_metrics(summary: dict[str, dict], prefix: str = "eval") -> dict[str, float]:
    """`eval/<benchmark>/pass@1`, `.../pass@1_stderr`, `.../pass@<k>`, `.../response_tokens`, `.../truncation_rate`."""
    out: dict[str, float] = {}
    for name, m in summary.items():
        out[f"{prefix}/{name}/pass@1"] = m["pass@1"]
        out[f"{prefix}/{name}/pass@1_stderr"] = m["pass@1_stderr"]
        if m["k"] > 1:
            out[f"{prefix}/{name}/pass@{m['k']}"] = m["pass@k"]
        for key, short in (("mean_response_tokens", "response_tokens"), ("truncation_rate", "truncation_rate")):
            if m[key] is not None:
                out[f"{prefix}/{name}/{short}"] = m[key]
    return out


def format_table(summary: dict[str, dict]) -> str:
    """One line per benchmark: problems, K, pass@1 ± stderr (%), pass@K (%), tokens, truncation."""
    header = f"{'benchmark':<14} {'problems':>8} {'K':>3} {'pass@1 (%)':>15} {'pass@K (%)':>10} {'tokens':>8} {'trunc %':>8} {'errors':>6}"
    lines = [header, "-" * len(header)]
    for name, m in summary.items():
        tokens = "-" if m["mean_response_tokens"] is None else f"{m['mean_response_tokens']:.0f}"
        trunc = "-" if m["truncation_rate"] is None else f"{100 * m['truncation_rate']:.1f}"
        score = f"{100 * m['pass@1']:.1f} ± {100 * m['pass@1_stderr']:.1f}"
        lines.append(f"{name:<14} {m['problems']:>8} {m['k']:>3} {score:>15} {100 * m['pass@k']:>10.1f} "
                     f"{tokens:>8} {trunc:>8} {m['scoring_errors']:>6}")
    return "\n".join(lines)


def pairwise_summary(scores: dict[str, list[float]], judge_errors: int, answers: list[dict],
                     rounds: int = 1000, seed: int = 0) -> dict:
    """Win rate of the model against the baseline: the mean of its game scores (win 1, tie 0.5,
    loss 0; a strong verdict counts 3 games), with a 95% percentile-bootstrap interval that
    resamples questions (a question's games move together: they share its difficulty).

    With every game played against one baseline, this mean is exactly the win probability a
    Bradley-Terry fit of the games gives (Arena-Hard-Auto's score), so no fit is needed."""
    sums = np.array([sum(v) for v in scores.values()], dtype=np.float64)
    counts = np.array([len(v) for v in scores.values()], dtype=np.float64)
    games = [s for v in scores.values() for s in v]
    tokens = [a["response_tokens"] for a in answers if a.get("response_tokens") is not None]
    truncated = [a["truncated"] for a in answers if a.get("truncated") is not None]
    out = {"win_rate": None, "ci_low": None, "ci_high": None, "questions": len(scores), "answers": len(answers),
           "weighted_games": len(games), "wins": games.count(1.0), "ties": games.count(0.5), "losses": games.count(0.0),
           "judge_errors": judge_errors,
           "mean_response_tokens": float(np.mean(tokens)) if tokens and len(tokens) == len(answers) else None,
           "truncation_rate": float(np.mean(truncated)) if truncated and len(truncated) == len(answers) else None}
    if len(sums):
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(sums), size=(rounds, len(sums)))
        boot = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
        out.update(win_rate=float(sums.sum() / counts.sum()), ci_low=float(np.percentile(boot, 2.5)),
                   ci_high=float(np.percentile(boot, 97.5)))
    return out


def format_pairwise_table(pairwise: dict[str, dict]) -> str:
    """One line per pairwise benchmark: win rate (%) and its 95% interval, games, judge errors."""
    header = f"{'benchmark':<14} {'questions':>9} {'win rate (%)':>13} {'95% CI':>15} {'W/T/L games':>14} {'errors':>6}"
    lines = [header, "-" * len(header)]
    for name, m in pairwise.items():
        rate = "-" if m["win_rate"] is None else f"{100 * m['win_rate']:.1f}"
        ci = "-" if m["ci_low"] is None else f"{100 * m['ci_low']:.1f} - {100 * m['ci_high']:.1f}"
        games = f"{m['wins']}/{m['ties']}/{m['losses']}"
        lines.append(f"{name:<14} {m['questions']:>9} {rate:>13} {ci:>15} {games:>14} {m['judge_errors']:>6}")
    return "\n".join(lines)


def write_results(out_dir: str | Path, samples: list[ScoredSample], summary: dict[str, dict],
                  run_info: dict | None = None) -> Path:
    """OUT/samples.jsonl (every sample) and OUT/summary.json ({"benchmarks": ..., run info})."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "samples.jsonl", [s.to_dict() for s in samples])
    path = out / "summary.json"
    path.write_text(json.dumps({**(run_info or {}), "benchmarks": summary}, indent=2))
    return path
