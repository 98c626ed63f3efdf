"""Rewards for every data source of the AM-Thinking recipe: math, code, science (mcq), ifeval, chat.

    score_row({"id": 1, "source": "math", "response": "... \\boxed{25}", "answer": "025"}).reward == 1.0

A row is a dict with `id`, `source`, `response` and the source's ground-truth fields. `score_row`
never raises: a row that cannot be scored gets reward 0 and `info["error"]` naming the problem.
Source modules are imported on first use (the math child process imports this package too).
"""

from __future__ import annotations

import time

from amray.rewards.config import RewardConfig
from amray.rewards.types import RewardResult

SOURCES = ("math", "code", "science", "mcq", "ifeval", "chat")
"""Every row's `source`, for the data tools and the rewards alike: AM-Thinking's categories (math,
code, science, instruction following, chat). `science` rows are multiple choice and score as `mcq`
(the reward's name for the same thing; both are accepted)."""


class RowError(ValueError):
    """The row itself is malformed (missing or ill-typed field, unknown source)."""


def require(row: dict, name: str, types: type | tuple[type, ...] = object, nonempty: bool = False) -> object:
    """Field `name` of a row, or a RowError naming the field and what was expected (the one field
    check of the rewards and the benchmark loaders). `nonempty`: blank text is missing too."""
    if name not in row or row[name] is None:
        source = row.get("source")
        needed_by = ("every row" if name in ("source", "response") else f"source `{source}`") if source else ""
        raise RowError(f"field `{name}` is missing" + (f" ({needed_by} needs it)" if needed_by else ""))
    value = row[name]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        expected = " or ".join(t.__name__ for t in _as_tuple(types))
        raise RowError(f"field `{name}` must be {expected}, got {type(value).__name__} {str(value)[:40]!r}")
    if nonempty and isinstance(value, str) and not value.strip():
        raise RowError(f"field `{name}` is empty")
    return value


def score_row(row: dict, config: RewardConfig | None = None) -> RewardResult:
    """Dispatch on `row["source"]`; always returns (reward 0 + `info.error` for a bad row)."""
    config = config or RewardConfig()
    start = time.monotonic()
    try:
        if not isinstance(row, dict):
            raise RowError(f"a row must be a JSON object, got {type(row).__name__}")
        source = require(row, "source", str)
        custom = _custom_scorer(source, config)
        if source not in SOURCES and custom is None:
            raise RowError(f"unknown source {source!r} (known: {', '.join(known_sources(config))})")
        response = require(row, "response", str)
        if config.strip_thinking:
            response = final_answer(response)
        if custom is not None:
            from amray.rewards.custom import score_custom

            result = score_custom(row, response, custom, config.timeout_s)
        else:
            result = _score(source, row, response, config)
    except RowError as e:
        result = RewardResult.failed(str(e))
    except Exception as e:  # noqa: BLE001 - a scorer bug must not crash the pool
        result = RewardResult.failed(f"scoring failed: {type(e).__name__}: {e}")
    result.info["elapsed_s"] = round(time.monotonic() - start, 4)
    return result


def _score(source: str, row: dict, response: str, config: RewardConfig) -> RewardResult:
    if source == "math":
        from amray.rewards.math import score_math

        answer = require(row, "answer", (str, int, float))
        return score_math(response, answer, timeout_s=config.timeout_s, memory_mb=config.math_memory_mb)
    if source in ("mcq", "science"):
        from amray.rewards.mcq import score_mcq

        return score_mcq(response, require(row, "answer", str))
    if source == "code":
        from amray.rewards.code import score_code

        return score_code(response, require(row, "language", str), require(row, "tests", (dict, str)), config)
    if source == "ifeval":
        from amray.rewards.ifeval import score_ifeval

        return score_ifeval(response, require(row, "instruction_id_list", list), require(row, "kwargs", list),
                            prompt=require(row, "prompt", str), timeout_s=config.timeout_s)
    from amray.rewards.chat import score_chat

    return score_chat(require(row, "prompt", str), response, config.chat, timeout_s=config.timeout_s)


def known_sources(config: RewardConfig) -> list[str]:
    """The built-in sources, and the custom one when `reward.custom` is set."""
    return [*SOURCES, *([config.custom_source] if config.custom else [])]


def _custom_scorer(source: str, config: RewardConfig) -> str | bytes | None:
    """What scores a custom source: a function registered from Python under that name (pickled),
    or `reward.custom` for rows of `reward.custom_source`."""
    if source in SOURCES:
        return None
    from amray.rewards.custom import registered

    pickled = registered(source)
    if pickled is not None:
        return pickled
    return config.custom if config.custom and source == config.custom_source else None


def final_answer(response: str) -> str:
    """The part of a reasoning response after its thinking: text after the last `</think>`, with an
    `<answer>...</answer>` wrapper removed (AM-Thinking's format). A response still inside `<think>`
    (cut off before answering) has no answer: ""."""
    if "</think>" in response:
        response = response.rsplit("</think>", 1)[1]
    elif response.lstrip().startswith("<think>"):
        return ""
    stripped = response.strip()
    if stripped.startswith("<answer>") and stripped.endswith("</answer>"):
        return stripped[len("<answer>"):-len("</answer>")]
    return response


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


__all__ = ["RewardConfig", "RewardResult", "RowError", "SOURCES", "final_answer", "known_sources", "require",
           "score_row"]
