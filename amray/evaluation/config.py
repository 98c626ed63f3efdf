"""How `jobs/evaluate.py` reads the run config: the `eval` section gives the sampling every
benchmark uses (AM-Thinking-v1 evaluates at temperature 0.6, top-p 0.95), and the `bench` section
(amray.config.BenchConfig) lets one benchmark differ (`bench.gsm8k.max_tokens=1024`).

    cfg = load_eval_config(None, ["rollout.max_model_len=4096", "bench.aime2024.temperature=1.0"])
"""

from __future__ import annotations

from pathlib import Path

from amray.config import BenchConfig, Config, EvalConfig, load_config

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


def load_eval_config(path: str | Path | None, overrides: list[str]) -> Config:
    """The run config from EVAL_DEFAULTS, then YAML, then dotted overrides (`bench` is one of its sections)."""

    def alias(item: str) -> str:
        key, sep, value = item.partition("=")
        return SAMPLING_ALIASES.get(key.strip(), key.strip()) + sep + value

    return load_config(path, [alias(o) for o in overrides], base=Config(eval=EvalConfig(**EVAL_DEFAULTS)))
