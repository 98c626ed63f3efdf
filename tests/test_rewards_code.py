"""Valid solutions pass in every test style and both languages; wrong ones fail. Real rows from
/work/shared/evaldata (LiveCodeBench, LeetCode, HumanEval, MBPP)."""

from __future__ import annotations

import json
import shutil

import pytest

from amray.rewards import RewardConfig, score_row
from amray.rewards.code import extract_code, same_output, livecodebench_tests

from evaldata_path import EVALDATA, needs_evaldata  # noqa: E402
CONFIG = RewardConfig(timeout_s=20.0)
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def code_row(code: str, tests: dict, language: str = "python") -> dict:
    fence = "py" if language == "python" else "cpp"
    response = f"Let me think.\n```{fence}\nprint('draft')\n```\nFinal:\n```{fence}\n{code}\n```\nDone."
    return {"id": "t", "source": "code", "language": language, "response": response, "tests": tests}


def lcb_problem(first_words: str) -> dict:
    problems = json.loads((EVALDATA / "livecodebench_v5_test_public.json").read_text())
    return next(p for p in problems if p["problem"].startswith(first_words))


def test_extract_code_takes_the_last_block_of_the_language() -> None:
    text = "```python\na = 1\n```\n```cpp\nint x;\n```\n```python3\nb = 2\n```\n```python\nunclosed"
    assert extract_code(text, "python") == "b = 2\n"
    assert extract_code(text, "cpp") == "int x;\n"
    assert extract_code("no code at all", "python") is None


def test_same_output_is_livecodebench_comparison() -> None:
    assert same_output("3  \n4\n\n", "3\n4")
    assert same_output("1.50 2\n", "1.5 2.0")
    assert not same_output("3\n4", "3\n5")
    assert not same_output("3", "3\n3")


LEAP_PY = "y = int(input())\nprint(366 if y % 400 == 0 or (y % 4 == 0 and y % 100) else 365)"
LEAP_CPP = ("#include <iostream>\nint main() { int y; std::cin >> y;\n"
            "  std::cout << ((y % 400 == 0 || (y % 4 == 0 && y % 100 != 0)) ? 366 : 365) << '\\n'; }")
SNAKE_PY = """class Solution:
    def finalPositionOfSnake(self, n: int, commands: List[str]) -> int:
        i = j = 0
        for c in commands:
            di, dj = {"UP": (-1, 0), "DOWN": (1, 0), "LEFT": (0, -1), "RIGHT": (0, 1)}[c]
            i, j = i + di, j + dj
        return i * n + j
"""


@needs_bwrap
@needs_evaldata
@pytest.mark.parametrize("language, code, reward", [
    ("python", LEAP_PY, 1.0),
    ("cpp", LEAP_CPP, 1.0),
    ("python", LEAP_PY.replace(" and y % 100", ""), 0.0),
    ("cpp", LEAP_CPP.replace("366 : 365", "365 : 366"), 0.0),
])
def test_livecodebench_stdin(language: str, code: str, reward: float) -> None:
    problem = lcb_problem("You are given an integer Y between 1583 and 2023.")
    result = score_row(code_row(code, livecodebench_tests(problem["tests"])), CONFIG) if language == "python" \
        else score_row(code_row(code, livecodebench_tests(problem["tests"]), "cpp"), CONFIG)
    assert result.reward == reward, result.info
    assert result.info["verdict"] == ("accepted" if reward else "wrong_answer")


@needs_bwrap
@needs_evaldata
def test_livecodebench_functional_leetcode_style() -> None:
    problem = lcb_problem("There is a snake in an n x n matrix grid")
    tests = livecodebench_tests(problem["tests"], problem["starter_code"])
    assert tests["functional"]["fn_name"] == "finalPositionOfSnake"
    assert score_row(code_row(SNAKE_PY, tests), CONFIG).reward == 1.0
    wrong = score_row(code_row(SNAKE_PY.replace("i * n + j", "j * n + i"), tests), CONFIG)
    assert wrong.reward == 0.0 and wrong.info["verdict"] == "wrong_answer"


@needs_bwrap
def test_functional_top_level_function_and_tuple_results() -> None:
    tests = {"functional": {"fn_name": "pair", "cases": [{"args": [1], "expected": [1, 2]}, {"args": [5], "expected": [5, 6]}]}}
    assert score_row(code_row("def pair(x):\n    return (x, x + 1)", tests), CONFIG).reward == 1.0


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (EVALDATA / name).read_text().splitlines() if line.strip()]


@needs_bwrap
@needs_evaldata
@pytest.mark.parametrize("index", [0, 10, 32, 53, 120, 163])
def test_humaneval_canonical_solutions_pass(index: int) -> None:
    task = _jsonl("humaneval.jsonl")[index]
    tests = {"asserts": task["test"] + f"\ncheck({task['entry_point']})\n"}
    result = score_row(code_row(task["prompt"] + task["canonical_solution"], tests), CONFIG)
    assert result.reward == 1.0, (task["task_id"], result.info)


@needs_bwrap
@needs_evaldata
def test_humaneval_wrong_solution_fails() -> None:
    task = _jsonl("humaneval.jsonl")[0]
    tests = {"asserts": task["test"] + f"\ncheck({task['entry_point']})\n"}
    result = score_row(code_row(task["prompt"] + "    return False\n", tests), CONFIG)
    assert result.reward == 0.0 and "AssertionError" in result.info["tests"][-1]["error"]


@needs_bwrap
@needs_evaldata
@pytest.mark.parametrize("task_id", [11, 17, 100, 126, 256, 400, 510])  # 126: `def sum(a, b)` is the entry point
def test_mbpp_reference_solutions_pass(task_id: int) -> None:
    task = next(t for t in _jsonl("mbpp.jsonl") if t["task_id"] == task_id)
    tests = {"asserts": task["test_setup_code"] + "\n" + "\n".join(task["test_list"])}
    result = score_row(code_row(task["code"], tests), CONFIG)
    assert result.reward == 1.0, (task_id, result.info)
    assert result.info["passed"] == len(task["test_list"]) + (1 if task["test_setup_code"].strip() else 0)


@needs_bwrap
@needs_evaldata
@pytest.mark.parametrize("index", [0, 50, 199])
def test_leetcode_check_style_solutions_pass(index: int) -> None:
    problem = json.loads((EVALDATA / "leetcode_test.json").read_text())[index]
    result = score_row(code_row(problem["solutions"], {"asserts": problem["tests"]["functional"]}), CONFIG)
    assert result.reward == 1.0, result.info


@needs_bwrap
def test_a_solution_function_named_like_a_builtin_is_tested_only_as_the_entry_point() -> None:
    # MBPP 126 defines `sum`; a solution may not define `abs` to answer for the tests' own `abs`
    solution = "def sum(a, b):\n    return a + b\ndef abs(x):\n    return 0"
    assert score_row(code_row(solution, {"asserts": "assert sum(2, 3) == 5\n"}), CONFIG).reward == 1.0
    tolerance = {"asserts": "def check(candidate):\n    assert abs(candidate(1.25) - 0.25) < 1e-6\ncheck(fraction)\n"}
    honest, forged = "def fraction(x):\n    return x % 1.0", "def fraction(x):\n    return 9.0\ndef abs(x):\n    return 0"
    assert score_row(code_row(honest, tolerance), CONFIG).reward == 1.0
    assert score_row(code_row(forged, tolerance), CONFIG).reward == 0.0


@pytest.mark.parametrize("row, error", [
    (code_row("print(1)", {"stdin_stdout": []}), "tests.stdin_stdout must be a non-empty list"),
    (code_row("print(1)", {"functional": {"cases": []}}), "tests.functional must be"),
    (code_row("print(1)", {"asserts": "assert (("}), "tests.asserts is not valid Python"),
    (code_row("print(1)", {"unit": "x"}), "unknown test style 'unit'"),
    (code_row("print(1)", "{not json"), "field `tests` is a string but not JSON"),
    (code_row("int main(){}", {"asserts": "assert f() == 1"}, "cpp"), "Python-only"),
    ({**code_row("x", {"asserts": "assert 1"}), "language": "rust"}, "field `language` must be one of"),
    ({"id": 1, "source": "code", "response": "x", "language": "python"}, "field `tests` is missing"),
])
def test_bad_code_rows_are_reported(row: dict, error: str) -> None:
    result = score_row(row, CONFIG)
    assert result.reward == 0.0 and error in result.info["error"]


def test_no_code_block_scores_zero() -> None:
    row = {"id": 1, "source": "code", "language": "python", "response": "print(1)", "tests": {"asserts": "assert True"}}
    result = score_row(row, CONFIG)
    assert result.reward == 0.0 and result.info["verdict"] == "no_code_block" and "error" not in result.info
