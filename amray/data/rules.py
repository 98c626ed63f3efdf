"""Query rules of AM-Thinking-v1's cleaning: each returns why a query breaks it, or None.

URLs and image references make a query unanswerable from its text; proofs and multi-part
questions have no single answer for math-verify to check (AM-Thinking-v1, section 2.1). What no
pattern catches, an unclear or incomplete math problem, a served LLM judges (`ill_posed`).
"""

from __future__ import annotations

import re

from amray.data.answers import unusable_answer
from amray.data.config import LLMFilterConfig

_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.[\w-]+\.\S+|\b[\w-]+\.(?:com|org|net|edu|gov|io)/\S*", re.IGNORECASE)

_IMAGE_TAGS = [
    re.compile(r"<\s*(?:image|img)\b[^>]*>", re.IGNORECASE),  # <image>, <img src=...>, <image_1>
    re.compile(r"!\[[^\]]*\]\([^)]*\)"),  # markdown image
    re.compile(r"\b[\w-]+\.(?:png|jpe?g|gif|bmp|svg|webp)\b", re.IGNORECASE),
]
_FIGURE_WORDS = r"(?:figure|diagram|picture|image|graph|photo|illustration|chart)s?"
_FIGURE_PHRASES = [
    re.compile(rf"\b(?:shown|given|depicted|illustrated|drawn|presented|pictured)\s+(?:in|on|by)\s+(?:the\s+)?"
               rf"(?:\w+\s+)?{_FIGURE_WORDS}", re.IGNORECASE),
    re.compile(rf"\b(?:see|refer to|according to|look at)\s+(?:the\s+)?(?:\w+\s+)?{_FIGURE_WORDS}", re.IGNORECASE),
    re.compile(rf"\b(?:the|this)\s+{_FIGURE_WORDS}\s+(?:below|above)", re.IGNORECASE),
    re.compile(r"\b(?:is|are)\s+shown\s+(?:below|above|here)\b", re.IGNORECASE),
    re.compile(r"\bfig(?:ure)?\.?\s*\d", re.IGNORECASE),
    re.compile(r"\battach(?:ed|ment)\b", re.IGNORECASE),
]
# A figure drawn in the text itself ([asy] in MATH, TikZ) is readable: only tags count then.
_INLINE_FIGURE = re.compile(r"\[asy\]|\\begin\{tikzpicture\}", re.IGNORECASE)

_PROOF = re.compile(r"\b(?:prove|show|demonstrate)\s+(?:that|rigorously)\b|^\s*prove\b|\bprove\s*:|"
                    r"\bprove\s+(?:the following|this|it|your)\b|\bgive\s+a\s+proof\b|证明|求证",
                    re.IGNORECASE | re.MULTILINE)

# Sub-question labels in four styles; a chain must start at the first label and count up.
_LABELS = {
    "paren_letter": re.compile(r"(?:(?<=[\s:;.,?])|^)\(([a-h])\)(?=\s)", re.MULTILINE),
    "paren_roman": re.compile(r"(?:(?<=[\s:;.,?])|^)\((i{1,3}|iv|v|vi{1,3})\)(?=\s)", re.MULTILINE),
    "paren_number": re.compile(r"(?:(?:(?<=[\s:;.,?])|^)\(|（)([1-9])[)）]", re.MULTILINE),
    "line_number": re.compile(r"^\s*(?:part\s+)?([1-9]|[a-h])[.)]\s", re.IGNORECASE | re.MULTILINE),
}
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}
_ASKS = re.compile(r"\?|\b(?:find|compute|calculate|determine|evaluate|what|how|which|prove|show|solve|simplify|"
                   r"express|write|list|explain|sketch|estimate|is there|does|give)\b|[求证]|是否|多少|什么", re.IGNORECASE)


# Substrings without which a rule cannot match: a plain `in` test skips most regex work (3x faster).
_URL_HINTS = ("://", "www.", "/")
_IMAGE_HINTS = ("<", "![", ".png", ".jp", ".gif", ".bmp", ".svg", ".webp", "figure", "diagram", "picture",
                "image", "graph", "photo", "illustration", "chart", "shown", "fig", "attach")
_PROOF_HINTS = ("prove", "show", "demonstrat", "proof", "证明", "求证")
_LABEL_HINTS = ("(", "（", "\n")


def url(query: str) -> str | None:
    if not _has_any(query, _URL_HINTS):
        return None
    m = _URL.search(query)
    return f"contains URL {m.group(0)[:80]!r}" if m else None


def image_reference(query: str) -> str | None:
    if not _has_any(query.lower(), _IMAGE_HINTS):
        return None
    for pattern in _IMAGE_TAGS:
        if m := pattern.search(query):
            return f"refers to an image: {m.group(0)[:80]!r}"
    if _INLINE_FIGURE.search(query):
        return None
    for pattern in _FIGURE_PHRASES:
        if m := pattern.search(query):
            return f"refers to a figure: {m.group(0)[:80]!r}"
    return None


def proof(query: str) -> str | None:
    if not _has_any(query.lower(), _PROOF_HINTS):
        return None
    m = _PROOF.search(query)
    return f"asks for a proof: {m.group(0).strip()!r}" if m else None


def multi_subquestion(query: str) -> str | None:
    """Two or more labelled parts ((a)/(b), (i)/(ii), (1)/(2), numbered lines) that each ask something.

    Labelled conditions ("Given (1) x+y=3 (2) x-y=1, find x") ask once and are kept."""
    if not _has_any(query, _LABEL_HINTS):
        return None
    for style, pattern in _LABELS.items():
        chain = _label_chain(pattern, query)
        if len(chain) < 2:
            continue
        parts = [query[start:end] for start, end in zip(chain, chain[1:] + [len(query)])]
        asking = sum(1 for p in parts if _ASKS.search(p))
        if asking >= 2:
            return f"{len(parts)} sub-questions ({style} labels), {asking} of them ask something"
    return None


def no_answer(answer: object) -> str | None:
    return unusable_answer(answer)


def _label_chain(pattern: re.Pattern, text: str) -> list[int]:
    """Start offsets of labels 1, 2, 3, ... in order (a=1, ii=2, ...), from the first label 1."""
    chain: list[int] = []
    for m in pattern.finditer(text):
        label = m.group(1).lower()
        ordinal = _ROMAN.get(label) if pattern is _LABELS["paren_roman"] else (
            int(label) if label.isdigit() else ord(label) - ord("a") + 1)
        if ordinal == len(chain) + 1:
            chain.append(m.start())
    return chain


def _has_any(text: str, hints: tuple[str, ...]) -> bool:
    return any(h in text for h in hints)


ILL_POSED_PROMPT = (
    "You check math problems before they are used to train a model whose final answer is graded against "
    "one reference answer. Decide whether the problem below is well posed: self-contained (every quantity, "
    "figure, table or definition it needs is given in its text), unambiguous, and asking for one definite "
    "answer. Do not solve it.\n\n[Problem]\n{query}\n\n"
    'Reply with only one JSON object: {{"well_posed": true or false, "reason": "one short sentence"}}.'
)
_VERDICT_SCHEMA = {"type": "json_schema", "json_schema": {"name": "query_check", "strict": True, "schema": {
    "type": "object", "properties": {"well_posed": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 300}},
    "required": ["well_posed", "reason"], "additionalProperties": False}}}


def ill_posed(queries: list[str], cfg: LLMFilterConfig) -> list[tuple[bool | None, str]]:
    """The served model's verdict on each query: (True, reason) ill posed, (False, reason) well
    posed, or (None, what went wrong) when it could not judge (timeout, error, no verdict)."""
    from amray.configtree import ConfigError
    from amray.endpoint import EndpointClient, EndpointError, parse_json_object

    template = cfg.prompt or ILL_POSED_PROMPT
    try:
        client = EndpointClient(cfg, "llm_filter")
    except EndpointError as e:  # e.g. the API key's variable is not set: the run's setting, named
        raise ConfigError(str(e)) from None
    with client:
        def judge(query: str) -> tuple[bool | None, str]:
            try:
                reply = client.chat([{"role": "user", "content": template.format(query=query)}],
                                    response_format=_VERDICT_SCHEMA)
            except EndpointError as e:
                return None, str(e)
            verdict = parse_json_object(reply.text, ("well_posed",))
            if verdict is None or not isinstance(verdict["well_posed"], bool):
                cut = " (cut at llm_filter.max_tokens)" if reply.finish_reason == "length" else ""
                return None, f"{client.name}: no {{\"well_posed\": true|false}} in the answer{cut}: {reply.text[-200:]!r}"
            return not verdict["well_posed"], str(verdict.get("reason", ""))[:300]

        return client.map(judge, queries)
