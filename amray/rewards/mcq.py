"""Multiple-choice reward: the model's letter against `answer`.

Where the letter is read from, in order: the last `\\boxed{}` (e.g. `\\boxed{C}`, `\\boxed{\\text{(C)}}`),
else the last "Answer: C" / "answer is (C)", else the last "(C)". Letters A-Z, upper case only
(a lone lower-case "a" is a word, not an option).
"""

from __future__ import annotations

import re
import time

from amray.rewards.math import last_boxed
from amray.rewards.types import RewardResult

_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_BOXED_LETTER = re.compile(r"^\(?\s*([A-Z])\s*\)?(?:$|[\s.:)])")
_ANSWER_IS = re.compile(r"(?i:answer)(?:\s+is)?\s*[:：]?\s*\**\s*\(?([A-Z])\)?(?![A-Za-z])")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")


def extract_choice(response: str) -> str | None:
    """The chosen letter, or None when the response commits to none."""
    boxed = last_boxed(response)
    if boxed is not None:
        text = boxed
        while _WRAPPERS.search(text):
            text = _WRAPPERS.sub(r"\1", text)
        m = _BOXED_LETTER.match(text.strip())
        return m.group(1) if m else None
    for pattern in (_ANSWER_IS, _PAREN_LETTER):
        found = pattern.findall(response)
        if found:
            return found[-1]
    return None


def score_mcq(response: str, answer: str) -> RewardResult:
    start = time.monotonic()
    gold = answer.strip().strip("()").strip().upper()
    if not re.fullmatch(r"[A-Z]", gold):
        return RewardResult.failed(f"field `answer` must be one option letter A-Z, got {answer!r}")
    choice = extract_choice(response)
    reward = 1.0 if choice == gold else 0.0
    return RewardResult(reward, {"extracted": choice, "verdict": "correct" if reward else
                                 ("no_choice" if choice is None else "wrong"),
                                 "elapsed_s": round(time.monotonic() - start, 4)})
