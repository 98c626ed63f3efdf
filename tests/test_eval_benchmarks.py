"""The benchmark registry on the real evaluation files, the checks that stop a run before any
generation, the pass@1 arithmetic, and the model comparison. No engine, no Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amray.config import ConfigError
from amray.evaluation.benchmarks import BenchmarkError, load_benchmark, parse_names
from amray.evaluation.config import load_eval_config, sampling_for
from amray.evaluation.report import ScoredSample
from amray.evaluation.report import flat_metrics, format_table, summarize

from evaldata_path import EVALDATA, needs_evaldata  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]


@needs_evaldata
@pytest.mark.parametrize("name, count, first_id, source", [
    ("aime2024", 30, 60, "math"), ("aime2025", 30, 0, "math"), ("amc2023", 40, 0, "math"),
    ("math500", 500, "test/precalculus/807.json", "math"), ("gsm8k", 1319, 0, "math"),
    ("livecodebench", 279, "abc365_b", "code"), ("humaneval", 164, "HumanEval/0", "code"),
    ("mbpp", 500, 11, "code"), ("ifeval", 541, 1000, "ifeval"),
])
def test_every_benchmark_loads_with_its_own_ids(name: str, count: int, first_id: object, source: str) -> None:
    problems = load_benchmark(name, EVALDATA)
    assert len(problems) == count  # MBPP: the usual test split, task ids 11-510
    assert problems[0].problem_id == first_id and problems[0].row["source"] == source
    assert len({str(p.problem_id) for p in problems}) == count
    assert all(p.row["prompt"].strip() for p in problems)
    assert len(load_benchmark(name, EVALDATA, limit=3)) == 3


@needs_evaldata
def test_math_prompts_and_answers_follow_each_file_format() -> None:
    instruction = "Please reason step by step, and put your final answer within \\boxed{}."
    aime25 = load_benchmark("aime2025", EVALDATA)[0].row
    assert aime25["prompt"].count(instruction) == 1 and aime25["prompt"].endswith("\n" + instruction)
    assert aime25["answer"] == 70  # an int in this file
    assert load_benchmark("aime2024", EVALDATA)[0].row["answer"] == "204"  # zero-padded strings
    assert load_benchmark("amc2023", EVALDATA)[0].row["answer"] == 27.0  # floats
    gsm = {p.problem_id: p.row for p in load_benchmark("gsm8k", EVALDATA)}
    assert gsm[0]["answer"] == "18" and gsm[0]["prompt"].startswith("Janet’s ducks")
    assert all("," not in r["answer"] and "####" not in r["answer"] for r in gsm.values())


@needs_evaldata
def test_livecodebench_prompt_is_the_official_wording() -> None:
    rows = [json.loads(line) for line in (EVALDATA / "livecodebench_v5_public_joined.jsonl").read_text().splitlines()]
    problems = load_benchmark("livecodebench", EVALDATA)
    assert [p.row["prompt"] for p in problems] == [r["qwq_prompt"] for r in rows]
    styles = {next(iter(p.row["tests"])) for p in problems}
    assert styles == {"stdin_stdout", "functional"}


@needs_evaldata
def test_livecodebench_contest_date_window() -> None:
    bench = load_eval_config(None, ["bench.livecodebench.date_from=2024-10-01",
                                    "bench.livecodebench.date_to=2024-12-31"]).bench
    dates = {r["question_id"]: r["contest_date"][:10] for r in
             map(json.loads, (EVALDATA / "livecodebench_v5_public_joined.jsonl").read_text().splitlines())}
    kept = load_benchmark("livecodebench", EVALDATA, bench)
    expected = [q for q, d in dates.items() if "2024-10-01" <= d <= "2024-12-31"]
    assert [p.problem_id for p in kept] == expected and 0 < len(kept) < len(dates)
    with pytest.raises(ConfigError, match="bench.livecodebench.date_to: '2024-13' is not a date"):
        load_eval_config(None, ["bench.livecodebench.date_to=2024-13"])


def test_sampling_per_benchmark_and_the_rollout_aliases() -> None:
    cfg = load_eval_config(None, ["rollout.max_tokens=512", "bench.gsm8k.temperature=0.0",
                                  "bench.aime2024.max_tokens=2048"])
    bench = cfg.bench
    assert sampling_for("math500", cfg.eval, bench) == (0.6, 0.95, 512)
    assert sampling_for("gsm8k", cfg.eval, bench) == (0.0, 0.95, 512)
    assert sampling_for("aime2024", cfg.eval, bench) == (0.6, 0.95, 2048)
    assert cfg.rollout.max_tokens == 64  # the training budget is untouched
    with pytest.raises(ConfigError, match="unknown config key bench.gsm8k.temp"):
        load_eval_config(None, ["bench.gsm8k.temp=0.1"])


def test_unknown_benchmark_is_named() -> None:
    with pytest.raises(BenchmarkError, match="unknown benchmark 'gsm9k'"):
        parse_names("aime2024,gsm9k")
    assert parse_names("gsm8k, aime2024,gsm8k") == ["gsm8k", "aime2024"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match=f"data file {tmp_path}/math500.jsonl not found"):
        load_benchmark("math500", tmp_path)


@pytest.mark.parametrize("name, file, row, error", [
    ("gsm8k", "gsm8k_test.jsonl", {"question": "q", "answer": "no final line", "idx": 1},
     "gsm8k_test.jsonl row 1: field `answer` has no '#### <number>'"),
    ("aime2024", "aime2024.jsonl", {"id": 1, "problem": "p"}, "aime2024.jsonl row 1: field `answer` is missing"),
    ("math500", "math500.jsonl", {"problem": "p", "answer": ["x"]}, "row 1: field `answer` must be str or int or float"),
    ("humaneval", "humaneval.jsonl", {"task_id": "H/1", "prompt": "def f():", "entry_point": "f", "test": "assert (("},
     "humaneval.jsonl row 1: tests.asserts is not valid Python"),
    ("livecodebench", "livecodebench_v5_public_joined.jsonl",
     {"question_id": "x", "problem": "p", "starter_code": "", "tests": [{"input": "1", "testtype": "stdin"}]},
     "row 1: key 'output' is missing"),
    ("ifeval", "ifeval_input_data.jsonl", {"key": 1, "prompt": "p", "instruction_id_list": ["a"], "kwargs": []},
     "row 1: `instruction_id_list` (strings) and `kwargs` (objects) must be lists of the same length"),
])
def test_malformed_row_is_named(tmp_path: Path, name: str, file: str, row: dict, error: str) -> None:
    good = {"gsm8k": {"question": "q", "answer": "#### 3", "idx": 0}, "aime2024": {"id": 0, "problem": "p", "answer": "1"},
            "math500": {"problem": "p", "answer": "1"},
            "humaneval": {"task_id": "H/0", "prompt": "def f():", "entry_point": "f", "test": "def check(c): pass"},
            "livecodebench": {"question_id": "y", "problem": "p", "starter_code": "",
                              "tests": [{"input": "1", "output": "1", "testtype": "stdin"}]},
            "ifeval": {"key": 0, "prompt": "p", "instruction_id_list": ["a"], "kwargs": [{}]}}[name]
    (tmp_path / file).write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(BenchmarkError, match=f"benchmark {name}: ") as e:
        load_benchmark(name, tmp_path)
    assert error in str(e.value)


def test_duplicate_ids_and_broken_json_are_named(tmp_path: Path) -> None:
    (tmp_path / "amc2023.jsonl").write_text('{"id": 5, "problem": "p", "answer": 1}\n{"id": 5, "problem": "q", "answer": 2}\n')
    with pytest.raises(BenchmarkError, match="amc2023.jsonl row 1: problem id 5 appears twice"):
        load_benchmark("amc2023", tmp_path)
    (tmp_path / "amc2023.jsonl").write_text('{"id": 5, "problem": "p", "answer": 1}\n{"id": 6,\n')
    with pytest.raises(BenchmarkError, match="line 2 of .*amc2023.jsonl: not valid JSON"):
        load_benchmark("amc2023", tmp_path)


def sample(bench: str, pid: int, k: int, reward: float, tokens: int = 10, truncated: bool = False) -> ScoredSample:
    return ScoredSample(bench, pid, k, "r", reward, {}, tokens, truncated, "length" if truncated else "stop")


def test_pass_at_1_is_averaged_over_k_samples_then_problems() -> None:
    # problem 0: 1 of 4 right, problem 1: 4 of 4, problem 2: 0 of 4
    rewards = {0: [1, 0, 0, 0], 1: [1, 1, 1, 1], 2: [0, 0, 0, 0]}
    samples = [sample("gsm8k", p, k, r, tokens=10 * (k + 1), truncated=(k == 3)) for p, rs in rewards.items()
               for k, r in enumerate(rs)]
    m = summarize(samples)["gsm8k"]
    assert m["pass@1"] == pytest.approx(5 / 12) and m["pass@k"] == pytest.approx(2 / 3) and m["k"] == 4
    # per-problem means 0.25, 1, 0: sample std 0.5204, / sqrt(3)
    assert m["pass@1_stderr"] == pytest.approx(0.300463, abs=1e-6)
    assert m["problems"] == 3 and m["mean_response_tokens"] == 25.0 and m["truncation_rate"] == 0.25
    flat = flat_metrics({"gsm8k": m})
    assert flat["eval/gsm8k/pass@1"] == m["pass@1"] and flat["eval/gsm8k/pass@4"] == m["pass@k"]
    assert "gsm8k" in format_table({"gsm8k": m}) and "41.7 ± 30.0" in format_table({"gsm8k": m})


def test_compare_two_summaries_table_and_chart(tmp_path: Path) -> None:
    def write(name: str, scores: dict[str, float]) -> Path:
        bench = {b: {"pass@1": s, "pass@1_stderr": 0.05, "pass@k": s, "k": 1, "problems": 10} for b, s in scores.items()}
        path = tmp_path / name / "summary.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"model": name, "benchmarks": bench}))
        return path

    a, b = write("base", {"gsm8k": 0.25, "math500": 0.10}), write("grpo", {"gsm8k": 0.40, "ifeval": 0.5})
    out = subprocess.run([sys.executable, "-m", "amray.evaluation", "compare", str(a), str(b), "--output",
                          str(tmp_path / "cmp.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    gsm = next(line for line in out.stdout.splitlines() if line.startswith("gsm8k"))
    assert "25.0 ± 5.0" in gsm and "40.0 ± 5.0" in gsm and gsm.rstrip().endswith("+15.0")
    assert next(line for line in out.stdout.splitlines() if line.startswith("ifeval")).split()[1] == "-"
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
