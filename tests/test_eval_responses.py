"""`jobs/evaluate.py --responses`: hand-written responses whose scores are known, re-scored with no
model through the real reward pool and the real sandbox (LiveCodeBench stdin and call-based tests,
HumanEval and MBPP asserts), so every pass@1 below is checked exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amray.data.records import write_records as write_jsonl

from evaldata_path import EVALDATA, needs_evaldata  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [needs_evaldata,
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")]

sys.path.insert(0, str(ROOT))
from jobs.evaluate import main  # noqa: E402


def boxed(answer: str) -> str:
    return f"Let me work it out step by step... so the answer is $\\boxed{{{answer}}}$."


def py(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```"


def jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (EVALDATA / name).read_text().splitlines() if line.strip()]


SECOND_LARGEST = "n = int(input())\na = list(map(int, input().split()))\nprint(a.index(sorted(a)[-2]) + 1)"
SNAKE = """class Solution:
    def finalPositionOfSnake(self, n: int, commands: List[str]) -> int:
        i = j = 0
        for c in commands:
            di, dj = {"UP": (-1, 0), "DOWN": (1, 0), "LEFT": (0, -1), "RIGHT": (0, 1)}[c]
            i, j = i + di, j + dj
        return i * n + j"""


def responses() -> tuple[list[dict], dict[str, tuple[float, float, int]]]:
    """Rows, and the expected (pass@1, pass@K, problems) of each benchmark."""
    he, mb = jsonl("humaneval.jsonl")[0], next(t for t in jsonl("mbpp.jsonl") if t["task_id"] == 11)
    rows = {
        # gsm8k K=2: problem 0 (18) right once, problem 1 (3) right twice -> (0.5 + 1) / 2
        ("gsm8k", 0): [boxed("18"), boxed("17")], ("gsm8k", 1): [boxed("3"), boxed("3.0")],
        ("aime2024", 60): [boxed("204")], ("aime2024", 61): [boxed("1")],     # zero-padded "204" / 25
        ("aime2025", 0): [boxed("70")],                                        # int answer
        ("amc2023", 0): [boxed("27")],                                         # float answer 27.0
        ("math500", "test/precalculus/807.json"): [boxed("(3, \\frac{\\pi}{2})")],
        # LiveCodeBench K=2: stdin problem right once, call-based problem right twice -> 0.75
        ("livecodebench", "abc365_b"): [py(SECOND_LARGEST), py(SECOND_LARGEST.replace("[-2]", "[-1]"))],
        ("livecodebench", "3533"): [py(SNAKE), "<think>plan</think>" + py(SNAKE)],
        ("humaneval", "HumanEval/0"): [py(he["prompt"] + he["canonical_solution"])],
        ("humaneval", "HumanEval/1"): [py("def separate_paren_groups(s):\n    return []")],
        ("mbpp", 11): [py(mb["code"])],
        ("ifeval", 1001): ["Day one we walk the Kyoto lanes and hear the temple bells."],  # no commas: followed
        ("ifeval", 1051): ["Dear Sam, please go and vote."],                               # capitals: not followed
    }
    out = [{"benchmark": b, "problem_id": pid, "sample": k, "response": r}
           for (b, pid), rs in rows.items() for k, r in enumerate(rs)]
    expected = {"gsm8k": (0.75, 1.0, 2), "aime2024": (0.5, 0.5, 2), "aime2025": (1.0, 1.0, 1),
                "amc2023": (1.0, 1.0, 1), "math500": (1.0, 1.0, 1), "livecodebench": (0.75, 1.0, 2),
                "humaneval": (0.5, 0.5, 2), "mbpp": (1.0, 1.0, 1), "ifeval": (0.5, 0.5, 2)}
    return out, expected


def test_saved_responses_are_rescored_exactly_with_no_model(tmp_path: Path) -> None:
    rows, expected = responses()
    write_jsonl(tmp_path / "responses.jsonl", rows)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "jobs/evaluate.py", "--responses", str(tmp_path / "responses.jsonl"),
                          "--data-dir", str(EVALDATA), "--output-dir", str(out), "reward.timeout_s=30",
                          "reward.num_workers=2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "responses"
    got = {b: (m["pass@1"], m["pass@k"], m["problems"]) for b, m in summary["benchmarks"].items()}
    assert got == expected
    assert all(m["scoring_errors"] == 0 for m in summary["benchmarks"].values())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(rows)
    lcb = {(s["problem_id"], s["sample"]): s for s in samples if s["benchmark"] == "livecodebench"}
    assert lcb[("abc365_b", 0)]["reward_info"]["style"] == "stdin_stdout"
    assert lcb[("abc365_b", 1)]["reward_info"]["verdict"] == "wrong_answer"
    assert lcb[("3533", 0)]["reward_info"]["style"] == "functional" and lcb[("3533", 1)]["reward"] == 1.0
    assert "gsm8k" in run.stdout and "75.0 ± 25.0" in run.stdout  # the printed table


def test_limit_keeps_the_first_problems_of_each_benchmark(tmp_path: Path) -> None:
    rows, _ = responses()
    write_jsonl(tmp_path / "r.jsonl", [r for r in rows if r["benchmark"] == "gsm8k"])
    summary = main(["--responses", str(tmp_path / "r.jsonl"), "--data-dir", str(EVALDATA), "--output-dir",
                    str(tmp_path / "out"), "--limit", "1", "reward.num_workers=1"])
    assert summary["benchmarks"]["gsm8k"]["problems"] == 1 and summary["benchmarks"]["gsm8k"]["pass@1"] == 0.5


@pytest.mark.parametrize("rows, error", [
    ([{"benchmark": "gsm8k", "problem_id": 99999, "sample": 0, "response": "x"}], "gsm8k has no problem 99999"),
    ([{"benchmark": "gsm9k", "problem_id": 0, "sample": 0, "response": "x"}], "line 1: unknown benchmark 'gsm9k'"),
    ([{"benchmark": "gsm8k", "problem_id": 0, "response": "x"}], "line 1: field `sample` is missing"),
    ([{"benchmark": "gsm8k", "problem_id": 0, "sample": 0, "response": "x"},
      {"benchmark": "gsm8k", "problem_id": 1, "sample": 1, "response": "x"}], "problem '1' has samples [1], expected 0..0"),
])
def test_bad_responses_stop_before_scoring(tmp_path: Path, rows: list[dict], error: str, capsys) -> None:
    write_jsonl(tmp_path / "r.jsonl", rows)
    with pytest.raises(SystemExit) as e:
        main(["--responses", str(tmp_path / "r.jsonl"), "--data-dir", str(EVALDATA), "--output-dir", str(tmp_path / "o")])
    assert error in str(e.value)
    assert not (tmp_path / "o").exists()
