"""The offline scorer command, end to end: every row back, in order, bad rows marked not dropped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROWS = [
    {"id": "m1", "source": "math", "response": "so \\boxed{\\frac{1}{2}}", "answer": "0.5"},
    {"id": "q1", "source": "mcq", "response": "Answer: C", "answer": "C"},
    {"id": "c1", "source": "code", "language": "python", "response": "```python\nprint(int(input()) * 2)\n```",
     "tests": {"stdin_stdout": [{"input": "4\n", "output": "8\n"}]}},
    {"id": "c2", "source": "code", "language": "python", "response": "```python\nprint(1)\n```", "tests": "{broken"},
    {"id": "i1", "source": "ifeval", "response": "hello there", "prompt": "Say hello without commas.",
     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"id": "x1", "source": "poetry", "response": "roses"},
    {"id": "m2", "source": "math", "response": "The answer is 3."},
]


def test_score_command_keeps_every_row_in_order(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps(r) for r in ROWS[:3]] + ["{this is not json"] + [json.dumps(r) for r in ROWS[3:]]
    inp.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "amray.rewards", "score", "--input", str(inp), "--output", str(out),
                           "--workers", "2", "reward.timeout_s=8"], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == len(lines)
    assert [w.get("id") for w in written] == ["m1", "q1", "c1", None, "c2", "i1", "x1", "m2"]
    rewards = {w.get("id"): w["reward"] for w in written}
    code_ok = 1.0 if shutil.which("bwrap") else 0.0
    assert rewards == {"m1": 1.0, "q1": 1.0, "c1": code_ok, None: 0.0, "c2": 0.0, "i1": 1.0, "x1": 0.0, "m2": 0.0}
    errors = {w.get("id"): w["reward_info"].get("error", "") for w in written}
    assert f"line 4 of {inp}: not valid JSON" in errors[None] and written[3]["raw"] == "{this is not json"
    assert "field `tests` is a string but not JSON" in errors["c2"]
    assert "unknown source 'poetry'" in errors["x1"]
    assert "field `answer` is missing" in errors["m2"]
    assert written[0]["answer"] == "0.5"  # the row itself is kept as it was
    assert all("elapsed_s" in w["reward_info"] for w in written if w.get("id"))


def test_score_command_rejects_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "amray.rewards", "score", "--input", "x", "--output", "y",
                           "reward.no_such_key=1"], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "reward.no_such_key" in proc.stderr
