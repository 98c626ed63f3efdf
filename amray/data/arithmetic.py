"""A synthetic verifiable task for the CPU demo: integer arithmetic with a boxed answer.

Rows follow amray's task format (`id`, `source`, `prompt`, `answer`), so the same math reward
(math-verify on the last \\boxed{}) scores them as it scores AIME.
"""

from __future__ import annotations

import random


def _row(i: int, a: int, op: str, b: int, seed: int) -> dict:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"id": f"arith-{seed}-{i}", "source": "math", "prompt": f"What is {a} {op} {b}?", "answer": str(value)}


def arithmetic_split(n_train: int, n_eval: int, seed: int = 0, max_operand: int = 99,
                     ops: str = "+-") -> tuple[list[dict], list[dict]]:
    """Disjoint train / held-out splits of `a op b` questions, 0 <= a, b <= max_operand:
    no held-out question appears in train."""
    space = (max_operand + 1) ** 2 * len(ops)
    if n_train + n_eval > space:
        raise ValueError(f"only {space} distinct questions with max_operand={max_operand} and ops={ops!r}; "
                         f"asked for {n_train} train + {n_eval} held-out")
    rng = random.Random(seed)
    picked = rng.sample(range(space), n_train + n_eval)  # distinct question indices
    rows = []
    for i, k in enumerate(picked):
        k, op_index = divmod(k, len(ops))
        a, b = divmod(k, max_operand + 1)
        rows.append(_row(i, a, ops[op_index], b, seed))
    return rows[:n_train], rows[n_train:]


def solution_text(row: dict) -> str:
    """The SFT target: a short worked answer ending in a boxed value."""
    question = row["prompt"].removeprefix("What is ").rstrip("?")
    return f"{question} = {row['answer']}. The answer is \\boxed{{{row['answer']}}}."
