"""Is a ground-truth answer something math-verify can grade?

The reward (`amray.rewards.math`) parses the answer as `\\boxed{answer}`; an answer that parses to
nothing, or to a product of letters ("See the proof" -> E*E*e*f*h...), can never be matched.
"""

from __future__ import annotations

import logging
import re
import threading

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")
_NON_ANSWERS = re.compile(r"^(proof|see (the )?(solution|proof|explanation)|n/?a|none|omitted|no answer|"
                          r"answers? (may|will) vary|\?+)\.?$", re.IGNORECASE)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
MAX_WORDS = 2
"""An answer with more words than this outside LaTeX commands is prose ("the set of all ...")."""


def answer_text(answer: object) -> str | None:
    """The answer as text (numbers as written: 27.0 -> "27"), or None when it is not one."""
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    if isinstance(answer, (int, float)):
        return str(answer)
    if isinstance(answer, str):
        return answer.strip()
    return None


def unusable_answer(answer: object) -> str | None:
    """Why math-verify cannot grade this answer, or None when it can."""
    text = answer_text(answer)
    if text is None:
        return f"answer {answer!r} is not text or a number"
    if not text:
        return "answer is empty"
    if _NUMBER.match(text):
        return None  # the common case needs no parse
    if _NON_ANSWERS.match(text):
        return f"answer {text!r} is not an answer"
    bare = re.sub(r"\\text\{[^{}]*\}", "x", text)  # a \text{Evelyn} name is one word
    if len(_WORD.findall(_LATEX_COMMAND.sub(" ", bare))) > MAX_WORDS:
        return f"answer {text[:60]!r} is prose"
    if not parse_answer(text):
        return f"answer {text[:60]!r} is not parsed by math-verify"
    return None


def parse_answer(text: str) -> list:
    """math-verify's parse of `\\boxed{text}` (as the reward reads a ground truth)."""
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    boxed = text if "\\boxed" in text else "\\boxed{" + text + "}"
    # math-verify's own timeout is signal-based: main thread only.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        return parse(boxed, parsing_timeout=timeout)
    except Exception:  # noqa: BLE001 - math-verify raises many kinds; all mean "cannot parse"
        return []


def same_answer(a: str, b: str) -> bool:
    """math-verify equivalence of two answer texts (plain equality first: most pairs are)."""
    if " ".join(a.split()) == " ".join(b.split()):
        return True
    from math_verify import verify

    pa, pb = parse_answer(a), parse_answer(b)
    if not pa or not pb:
        return False
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        return bool(verify(pa, pb, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001
        return False
