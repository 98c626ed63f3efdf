"""Multiple-choice math to fill-in: options removed, the answer becomes the chosen option's text.

AM-Thinking-v1 rewrites multiple-choice math so the reward checks a value, not a letter that a
guess gets right one time in four. A question that cannot stand without its options ("which of the
following ...") or whose answer matches no option is reported as unresolved instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from amray.data.answers import answer_text, same_answer, unusable_answer

# Option labels: (A) / \textbf{(A)} / （A）, or A. / A) / A: at a line start or after a space.
_LABEL_STYLES = (
    re.compile(r"(?:\\(?:textbf|mathrm|mathbf|text)\s*\{\s*)?[(（]([A-H])[)）]\s*\}?"),
    re.compile(r"(?:(?<=[\s$])|^)([A-H])\s*[.)．:：、](?=[\s$\\\d(+-])", re.MULTILINE),
)
_A_LABELS = ("(A)", "（A）", "A.", "A)", "A:", "A．", "A：", "A、", "A :", "A .")
_LETTER_ANSWER = re.compile(r"^\s*(?:\\(?:textbf|text|mathrm)\s*\{)?\s*[(（]?\s*([A-H])\s*[)）]?\s*\}?\s*(?:[.:：]|\s|$)")
_NEEDS_OPTIONS = re.compile(
    r"\b(?:of|from|among) the following\b|\bthe following (?:is|are)\b|"
    r"\bwhich (?:one|statement|option|choice|conclusion|proposition|expression)s?\b|"
    r"\bcorrect (?:option|choice|statement|conclusion|proposition)s?\b|\bthe (?:options|choices)\b",
    re.IGNORECASE)
_SPACING = re.compile(r"\\q?quad\b|\\[ ,;!:]|~")
_TRAILING_HEADER = re.compile(r"(?:answer\s+)?(?:choices|options)\s*[:：]?\s*$", re.IGNORECASE)


@dataclass
class Choices:
    start: int
    """Offset of the first option label in the query."""
    end: int
    """Offset just past the last option (its line's end)."""
    options: dict[str, str]
    """Letter -> option text, cleaned of spacing macros and `$`."""


@dataclass
class ChoiceResult:
    status: str
    """`not_choice`, `rewritten` or `unresolved`."""
    query: str = ""
    answer: str = ""
    detail: str = ""


def find_choices(query: str) -> Choices | None:
    """The last run of three or more consecutive option labels A, B, C, ..., or None."""
    if not any(h in query for h in _A_LABELS):
        return None  # the common case, without regex work
    best: Choices | None = None
    for style in _LABEL_STYLES:
        chain: list[re.Match] = []
        chains: list[list[re.Match]] = []
        for m in style.finditer(query):
            letter = m.group(1)
            if letter == "A":
                chain = [m]
                chains.append(chain)
            elif chain and ord(letter) == ord(chain[-1].group(1)) + 1:
                chain.append(m)
        chains = [c for c in chains if len(c) >= 3]
        if not chains:
            continue
        chain = chains[-1]
        line_end = query.find("\n", chain[-1].end())
        end = len(query) if line_end < 0 else line_end
        bounds = [m.end() for m in chain]
        stops = [m.start() for m in chain[1:]] + [end]
        options = {m.group(1): _clean(query[a:b]) for m, a, b in zip(chain, bounds, stops)}
        found = Choices(chain[0].start(), end, options)
        if best is None or len(found.options) > len(best.options):
            best = found
    return best


def rewrite_multiple_choice(query: str, answer: object) -> ChoiceResult:
    choices = find_choices(query)
    if choices is None:
        return ChoiceResult("not_choice")
    stem = _stem(query, choices)
    if m := _NEEDS_OPTIONS.search(stem):
        return ChoiceResult("unresolved", detail=f"the question needs its options: {m.group(0)!r}")
    text = answer_text(answer) or ""
    letter_match = _LETTER_ANSWER.match(text)
    if letter_match and letter_match.group(1) in choices.options:
        letter = letter_match.group(1)
    else:
        matching = [k for k, v in choices.options.items() if v and text and same_answer(text, v)]
        if len(matching) != 1:
            return ChoiceResult("unresolved", detail=f"answer {text[:40]!r} matches {len(matching)} of the "
                                                     f"options {sorted(choices.options)}")
        letter = matching[0]
    chosen = choices.options[letter]
    if why := unusable_answer(chosen):
        return ChoiceResult("unresolved", detail=f"option {letter}: {why}")
    return ChoiceResult("rewritten", stem, chosen, f"option {letter} of {len(choices.options)}")


def _stem(query: str, choices: Choices) -> str:
    before = query[:choices.start].rstrip()
    if before.count("$") % 2 == 1 and before.endswith("$"):
        before = before[:-1].rstrip()  # the `$` that opened an inline options line
    before = _TRAILING_HEADER.sub("", before).rstrip()
    after = query[choices.end:].strip()
    return before + ("\n" + after if after else "")


def _clean(option: str) -> str:
    option = _SPACING.sub(" ", option).strip()
    option = option.strip("$").strip().rstrip(" .;,").strip("$").strip()
    if option.startswith("\\textbf{") and option.endswith("}"):
        option = option[len("\\textbf{"):-1].strip()
    return option
