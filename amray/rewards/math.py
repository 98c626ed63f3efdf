"""Math reward: the LAST `\\boxed{}` of the response, checked against the answer by math-verify.

math-verify on a whole response merges every boxed answer into a set (a response that boxes
"3" and then "4" would match either), so only the last box is handed to it. Its `signal.alarm`
timeouts are off (they fail off the main thread); the bound comes from `TimedWorkerProcess`.
"""

from __future__ import annotations

import logging
import re
import time

from amray.rewards.isolation import WorkerError, WorkerTimeout, shared_worker
from amray.rewards.types import RewardResult

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces matched, `\\{` skipped),
    or of the last `\\boxed 5` form. None when there is no box, or the last one is unclosed."""
    matches = list(_BOX_COMMAND.finditer(text))
    if not matches:
        return None
    i = matches[-1].end()
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":  # `\boxed 5`: the token runs to the end of the inline math or line
        if i == matches[-1].end():
            return None  # `\boxed5` is not a box
        token = re.split(r"[$\n]", text[i:], maxsplit=1)[0].strip().rstrip(".")
        return token or None
    depth, start = 0, i + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # an escaped character (e.g. `\{`) never opens or closes the box
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
        i += 1
    return None


def verify_math(response: str, answer: str | int | float) -> RewardResult:
    """Score without a time bound (call it through `score_math`, or in a child process)."""
    from math_verify import parse, verify  # heavy (sympy): imported where the work happens

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout disabled" notice is by design
    boxed = last_boxed(response)
    if boxed is None:
        return RewardResult(0.0, {"verdict": "no_boxed_answer", "extracted": None})
    gold_text = str(answer).strip()
    if "\\boxed" not in gold_text:
        gold_text = "\\boxed{" + gold_text + "}"
    gold = parse(gold_text, parsing_timeout=None)
    if not gold:
        return RewardResult.failed(f"ground-truth answer {answer!r} could not be parsed", extracted=boxed)
    pred = parse("\\boxed{" + boxed + "}", parsing_timeout=None)
    if not pred:
        return RewardResult(0.0, {"verdict": "unparseable_answer", "extracted": boxed})
    ok = verify(gold, pred, timeout_seconds=None)
    return RewardResult(1.0 if ok else 0.0, {"verdict": "correct" if ok else "wrong", "extracted": boxed})


def score_math(response: str, answer: str | int | float, timeout_s: float = 10.0,
               memory_mb: int | None = 4096) -> RewardResult:
    """`verify_math` in this process's math child, killed past `timeout_s` (reward 0, `error`)."""
    start = time.monotonic()
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
        result = RewardResult.failed(f"field `answer` must be a non-empty string or number, got {answer!r}")
    elif last_boxed(response) is None:  # the common failure needs no child round trip
        result = RewardResult(0.0, {"verdict": "no_boxed_answer", "extracted": None})
    else:
        worker = shared_worker("math", preload=("amray.rewards.math", "math_verify"), memory_mb=memory_mb)
        try:
            result = worker.call("amray.rewards.math:verify_math", (response, answer), timeout_s)
        except (WorkerTimeout, WorkerError) as e:
            result = RewardResult.failed(str(e), extracted=last_boxed(response))
    result.info["elapsed_s"] = round(time.monotonic() - start, 4)
    return result
