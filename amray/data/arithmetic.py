"""A synthetic verifiable task for the CPU demo: integer arithmetic with a boxed answer.

Rows follow amray's task format (`id`, `source`, `prompt`, `answer`), so the same math reward
(math-verify on the last \\boxed{}) scores them as it scores AIME.
"""

from __future__ import annotations

import random


def arithmetic_rows(n: int, seed: int, max_operand: int = 99, ops: str = "+-") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        op = rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"id": f"arith-{seed}-{i}", "source": "math", "prompt": f"What is {a} {op} {b}?",
                     "answer": str(value)})
    return rows


def arithmetic_split(n_train: int, n_eval: int, seed: int = 0, max_operand: int = 99,
                     ops: str = "+-") -> tuple[list[dict], list[dict]]:
    """Disjoint train / held-out splits (held-out questions never appear in train)."""
    pool = arithmetic_rows(4 * (n_train + n_eval), seed, max_operand, ops)
    seen: dict[str, dict] = {}
    for row in pool:
        seen.setdefault(row["prompt"], row)
    unique = list(seen.values())
    if len(unique) < n_train + n_eval:
        raise ValueError(f"only {len(unique)} distinct questions with max_operand={max_operand}; "
                         f"asked for {n_train} train + {n_eval} held-out")
    return unique[:n_train], unique[n_train:n_train + n_eval]


def solution_text(row: dict) -> str:
    """The SFT target: a short worked answer ending in a boxed value."""
    question = row["prompt"].removeprefix("What is ").rstrip("?")
    return f"{question} = {row['answer']}. The answer is \\boxed{{{row['answer']}}}."
