"""Evaluation settings: the run config's `eval` section gives the sampling every benchmark uses
(AM-Thinking-v1 evaluates at temperature 0.6, top-p 0.95), and the `bench` section below lets one
benchmark differ (`bench.gsm8k.max_tokens=1024`, `bench.livecodebench.date_from=2024-10-01`).

    cfg = load_eval_config(None, ["rollout.max_model_len=4096", "bench.aime2024.temperature=1.0"])
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # amray.config may import BenchConfig from here: no import of it at load time
    from amray.config import Config, EvalConfig


@dataclass
class BenchmarkSettings:
    """One benchmark's sampling; a field left empty (null) takes the `eval` section's value."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    """Response budget; generation also stops at rollout.max_model_len (then it counts as truncated)."""


@dataclass
class LiveCodeBenchSettings(BenchmarkSettings):
    date_from: str = ""
    """Keep problems whose contest date (YYYY-MM-DD) is on or after this; empty: no lower bound.
    The v5 public file spans 2024-08-03 .. 2025-01-04."""
    date_to: str = ""
    """Keep problems whose contest date is on or before this; empty: no upper bound."""


@dataclass
class BenchConfig:
    """Per-benchmark settings (the `bench` section). A benchmark without a field here uses `eval`."""

    aime2024: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    aime2025: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    amc2023: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    math500: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    gsm8k: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    livecodebench: LiveCodeBenchSettings = field(default_factory=LiveCodeBenchSettings)
    humaneval: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    mbpp: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    ifeval: BenchmarkSettings = field(default_factory=BenchmarkSettings)

    def settings(self, name: str) -> BenchmarkSettings:
        return getattr(self, name, None) or BenchmarkSettings()


# What `jobs/evaluate.py` starts from: the usual sampling for reasoning models, and 4 samples per
# problem. (The run config's own `eval` defaults serve the CPU demo's short greedy-ish answers.)
EVAL_DEFAULTS = {"samples": 4, "temperature": 0.6, "top_p": 0.95, "max_tokens": 32768}
# On the evaluate command line these set the evaluation sampling (they are the training sampling
# elsewhere): `rollout.max_tokens=512` and `eval.max_tokens=512` mean the same here.
SAMPLING_ALIASES = {"rollout.temperature": "eval.temperature", "rollout.top_p": "eval.top_p",
                    "rollout.max_tokens": "eval.max_tokens"}


def sampling_for(name: str, eval_cfg: EvalConfig, bench: BenchConfig) -> tuple[float, float, int]:
    """(temperature, top_p, max_tokens) of one benchmark: its own settings, else `eval`'s."""
    s = bench.settings(name)
    return (eval_cfg.temperature if s.temperature is None else s.temperature,
            eval_cfg.top_p if s.top_p is None else s.top_p,
            eval_cfg.max_tokens if s.max_tokens is None else s.max_tokens)


def bench_problems(bench: BenchConfig) -> list[str]:
    """What is wrong with a `bench` section that its types alone do not catch (a bad date)."""
    problems = []
    for key in ("date_from", "date_to"):
        value = getattr(bench.livecodebench, key)
        if value:
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                problems.append(f"config key bench.livecodebench.{key}: {value!r} is not a date YYYY-MM-DD")
    return problems


def load_eval_config(path: str | Path | None, overrides: list[str]) -> Config:
    """The run config from EVAL_DEFAULTS, then YAML, then dotted overrides (`bench` is one of its sections)."""
    from amray.config import Config, EvalConfig, load_config

    def alias(item: str) -> str:
        key, sep, value = item.partition("=")
        return SAMPLING_ALIASES.get(key.strip(), key.strip()) + sep + value

    return load_config(path, [alias(o) for o in overrides], base=Config(eval=EvalConfig(**EVAL_DEFAULTS)))
