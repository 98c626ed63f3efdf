"""A synthetic verifiable task for the CPU demo: integer arithmetic with a boxed answer.

Rows follow amray's task format (`id`, `source`, `prompt`, `answer`), so the same math reward
(math-verify on the last \\boxed{}) scores them as it scores AIME.
"""

from __future__ import annotations

import random


TEMPLATES = (
    "What is {a} {op} {b}?",
    "Compute {a} {op} {b}.",
    "Calculate {a} {op} {b}.",
    "{a} {op} {b} = ?",
    "Find the value of {a} {op} {b}.",
    "Evaluate: {a} {op} {b}",
)


def _row(i: int, a: int, op: str, b: int, template: str, seed: int) -> dict:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"id": f"arith-{seed}-{i}", "source": "math", "prompt": template.format(a=a, op=op, b=b),
            "answer": str(value)}


def arithmetic_split(n_train: int, n_eval: int, seed: int = 0, max_operand: int = 99, ops: str = "+-",
                     templates: tuple[str, ...] = TEMPLATES) -> tuple[list[dict], list[dict]]:
    """Disjoint train / held-out splits of `a op b` questions (0 <= a, b <= max_operand), each
    worded by one of `templates`: no held-out question text appears in train."""
    per_template = (max_operand + 1) ** 2 * len(ops)
    space = per_template * len(templates)
    if n_train + n_eval > space:
        raise ValueError(f"only {space} distinct questions with max_operand={max_operand}, ops={ops!r} and "
                         f"{len(templates)} templates; asked for {n_train} train + {n_eval} held-out")
    rng = random.Random(seed)
    rows = []
    for i, k in enumerate(rng.sample(range(space), n_train + n_eval)):  # distinct question indices
        k, t = divmod(k, len(templates))
        k, op_index = divmod(k, len(ops))
        a, b = divmod(k, max_operand + 1)
        rows.append(_row(i, a, ops[op_index], b, templates[t], seed))
    return rows[:n_train], rows[n_train:]


def solution_text(row: dict, boxed: bool = True) -> str:
    """The SFT target: the value, boxed (what the math reward reads) unless `boxed` is False."""
    return f"The answer is \\boxed{{{row['answer']}}}." if boxed else f"The answer is {row['answer']}."
