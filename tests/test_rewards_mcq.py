"""Multiple choice, and the final-answer rule every source shares (thinking is not scored)."""

from __future__ import annotations

import pytest

from amray.rewards import RewardConfig, final_answer, score_row
from amray.rewards.mcq import extract_choice


@pytest.mark.parametrize("response, letter", [
    (r"Therefore the answer is \boxed{C}.", "C"),
    (r"\boxed{\text{(B)}}", "B"),
    (r"\boxed{D. 42}", "D"),
    ("Answer: C", "C"),
    ("**Answer:** E", "E"),
    ("The answer is (A).", "A"),
    ("Between (B) and (C), I pick (C)", "C"),
    (r"First I thought Answer: A, but finally \boxed{B}", "B"),  # a box wins
    ("answer: b", None),  # lower case is a word, not an option
    ("I am not sure.", None),
])
def test_extract_choice(response: str, letter: str | None) -> None:
    assert extract_choice(response) == letter


def test_mcq_rows() -> None:
    row = {"id": 1, "source": "mcq", "response": "Answer: C", "answer": "C"}
    assert score_row(row).reward == 1.0
    assert score_row({**row, "answer": "(c)"}).reward == 1.0
    wrong = score_row({**row, "answer": "B"})
    assert wrong.reward == 0.0 and wrong.info == {**wrong.info, "extracted": "C", "verdict": "wrong"}
    bad = score_row({**row, "answer": "C and D"})
    assert bad.reward == 0.0 and "one option letter" in bad.info["error"]


@pytest.mark.parametrize("response, answer", [
    ("<think>maybe \\boxed{3}</think>\\boxed{4}", "\\boxed{4}"),
    ("reasoning without an opening tag</think><answer>\\boxed{4}</answer>", "\\boxed{4}"),
    ("<think>still thinking \\boxed{4}", ""),
    ("no thinking at all \\boxed{4}", "no thinking at all \\boxed{4}"),
])
def test_final_answer(response: str, answer: str) -> None:
    assert final_answer(response) == answer


def test_a_box_inside_the_thinking_does_not_count() -> None:
    row = {"id": 1, "source": "math", "answer": "3", "response": "<think>it is \\boxed{3}</think>so \\boxed{4}"}
    assert score_row(row).reward == 0.0
    assert score_row({**row, "response": "<think>it is \\boxed{3}"}).reward == 0.0  # never answered
    assert score_row(row, RewardConfig(strip_thinking=False)).info["extracted"] == "4"


def test_science_rows_from_the_data_tools_score_as_multiple_choice(tmp_path) -> None:
    """One list of sources: a row the cleaning command accepts as `science` is scored, not refused."""
    from amray.data.rows import read_rows

    path = tmp_path / "science.jsonl"
    path.write_text('{"id": "s1", "source": "science", "prompt": "Which gas? (A) O2 (B) N2", "answer": "B"}\n')
    (row,) = read_rows(path)
    right = score_row({**row.data, "response": "It is nitrogen. Answer: B"})
    assert right.reward == 1.0 and "error" not in right.info
    assert score_row({**row.data, "response": "Answer: A"}).info["verdict"] == "wrong"
