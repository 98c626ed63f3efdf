"""The cleaning command end to end: a dirty file with one row per rule, verl rows, Parquet, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from amray.data.preprocess import main
from amray.data.rows import DataError

from evaldata_path import EVALDATA, needs_evaldata  # noqa: E402

MARBLES = ("A bag contains 5 red marbles, 7 blue marbles and 8 green marbles. Two marbles are drawn at random "
           "without replacement. What is the probability that both marbles are the same colour? Express your "
           "answer as a common fraction.")


def first_record(name: str, field: str) -> str:
    with open(EVALDATA / name) as f:
        return json.loads(f.readline())[field]


def dirty_rows() -> list[dict]:
    """One row per rule (id = the rule expected to drop it), and rows that must survive (id keep-*)."""
    math500 = first_record("math500.jsonl", "problem")
    gsm8k = first_record("gsm8k_test.jsonl", "question")
    return [
        {"id": "keep-math", "source": "math", "prompt": "What is the sum of the first 10 positive integers?", "answer": "55"},
        {"id": "exact_duplicate", "source": "math", "prompt": "what is the SUM of the first 10   positive integers?\n",
         "answer": "55"},
        {"id": "keep-marbles", "source": "math", "prompt": MARBLES, "answer": r"\frac{59}{190}"},
        {"id": "near_duplicate", "source": "math", "answer": r"\frac{59}{190}",
         "prompt": MARBLES.replace("common fraction", "common fraction in lowest terms")},
        {"id": "url", "source": "code", "prompt": "Solve the problem at https://codeforces.com/problemset/problem/4/A.",
         "tests": {"inputs": ["8\n"], "outputs": ["YES\n"]}},
        {"id": "image_reference", "source": "math", "prompt": "<image>\nFind the area of the shaded region.", "answer": "12"},
        {"id": "proof", "source": "math", "prompt": "Prove that the square root of 2 is irrational.", "answer": "proof"},
        {"id": "multi_subquestion", "source": "math", "answer": "4",
         "prompt": "Let f(x) = x^2. (a) Find f(2). (b) Find the minimum of f."},
        {"id": "keep-choice", "source": "math", "prompt": "Compute 6 times 7.\n(A) 42 (B) 48 (C) 36 (D) 40", "answer": "A"},
        {"id": "multiple_choice_unresolved", "source": "math", "answer": "C",
         "prompt": "Which of the following numbers is prime?\nA. 4\nB. 6\nC. 7\nD. 9"},
        {"id": "no_answer", "source": "math", "prompt": "Find the number of primes below 30.", "answer": ""},
        {"id": "contaminated_exact", "source": "math", "answer": "x",
         "prompt": math500 + "\nPlease reason step by step, and put your final answer within \\boxed{}."},
        {"id": "contaminated_ngram", "source": "math", "answer": "18", "prompt": "Word problem. " + gsm8k[:-30]},
        # Codeforces template sentences appear in hundreds of eval problems: not contamination.
        {"id": "keep-code", "source": "code", "tests": {"inputs": ["1\n3\n"], "outputs": ["6\n"]},
         "prompt": "Compute the sum 1 + 2 + ... + n. The first line contains the number of test cases t. The "
                   "description of the test cases follows. The first line of each test case contains n."},
        {"id": "keep-proof-word-in-chat", "source": "chat", "prompt": "Show that you care: write a thank-you note."},
        {"id": "keep-ifeval", "source": "ifeval", "prompt": "Write a haiku about rain in lowercase.",
         "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_evaldata
def test_every_rule_drops_exactly_its_row(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "train.jsonl", dirty_rows())
    out, report, rejects = tmp_path / "out.jsonl", tmp_path / "report.json", tmp_path / "rejects.jsonl"
    main(["--input", str(src), "--output", str(out), "--report", str(report), "--rejects", str(rejects),
          "--decontaminate", str(EVALDATA / "math500.jsonl"), str(EVALDATA / "gsm8k_test.jsonl"),
          str(EVALDATA / "codeforces_test.json"), "--", "decontamination.embedding=false"])

    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == [r["id"] for r in dirty_rows() if r["id"].startswith("keep-")]
    dropped = read_jsonl(rejects)
    assert all(r["reject_rule"] == r["id"] for r in dropped), [(r["id"], r["reject_rule"]) for r in dropped]
    assert "math500.jsonl row 1" in next(r for r in dropped if r["id"] == "contaminated_exact")["reject_detail"]
    assert "id keep-marbles" in next(r for r in dropped if r["id"] == "near_duplicate")["reject_detail"]

    choice = next(r for r in kept if r["id"] == "keep-choice")
    assert (choice["prompt"], choice["answer"], choice["answer_original"]) == ("Compute 6 times 7.", "42", "A")

    rep = json.loads(report.read_text())
    assert (rep["rows_in"], rep["rows_out"], rep["rows_rejected"]) == (16, 6, 10)
    assert rep["rewritten"] == {"multiple_choice": 1}
    assert {rule: n for rule, n in rep["rejected_by_rule"].items() if n} == {r["id"]: 1 for r in dropped}
    assert "contaminated_embedding" not in rep["rejected_by_rule"]  # switched off above
    assert rep["eval_queries"] == {"math500.jsonl": 500, "gsm8k_test.jsonl": 1319, "codeforces_test.json": 408}


@needs_evaldata
def test_switched_off_rules_let_rows_through(tmp_path: Path) -> None:
    rows = [r for r in dirty_rows() if r["id"] in ("proof", "url", "keep-choice", "exact_duplicate", "keep-math")]
    next(r for r in rows if r["id"] == "proof")["answer"] = "1"  # else `no_answer` drops it
    src = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = tmp_path / "prep.yaml"
    cfg.write_text("rules:\n  proof: false\n  multiple_choice: false\n")
    out = tmp_path / "out.jsonl"
    rep = main(["--input", str(src), "--output", str(out), "--report", str(tmp_path / "r.json"),
                "--config", str(cfg), "rules.url=false", "rules.exact_duplicate=false", "rules.near_duplicate=false"])
    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == [r["id"] for r in rows]
    assert next(r for r in kept if r["id"] == "keep-choice")["answer"] == "A"  # not rewritten
    assert set(rep["rejected_by_rule"]) == {"image_reference", "multi_subquestion", "no_answer"}


def test_verl_rows_and_parquet_are_converted(tmp_path: Path) -> None:
    verl = [
        {"data_source": "openai/gsm8k", "ability": "math", "prompt": [{"role": "user", "content": "What is 12 + 30?"}],
         "reward_model": {"style": "rule", "ground_truth": "42"}, "extra_info": {"split": "train", "index": 7}},
        {"data_source": "livecodebench", "prompt": [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "Print the sum of two integers."}],
         "reward_model": {"style": "rule", "ground_truth": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})},
         "extra_info": {"index": 3}},
    ]
    src = tmp_path / "verl.parquet"
    datasets.Dataset.from_list(verl).to_parquet(str(src))
    # A lone user turn becomes text, a system + user prompt stays a list: Parquet cannot hold both.
    with pytest.raises(DataError, match="cannot write Parquet, row 2: field `prompt` is list of object here "
                                        "but string in row 1; write .jsonl instead"):
        main(["--input", str(src), "--output", str(tmp_path / "out.parquet"), "--report", str(tmp_path / "r.json")])
    out = tmp_path / "out.jsonl"
    main(["--input", str(src), "--output", str(out), "--report", str(tmp_path / "r.json")])
    math_row, code_row = read_jsonl(out)
    assert math_row == {"id": "openai/gsm8k/7", "source": "math", "prompt": "What is 12 + 30?", "answer": "42",
                        "data_source": "openai/gsm8k", "extra_info": {"split": "train", "index": 7}}
    assert code_row["id"] == "livecodebench/3" and code_row["source"] == "code" and code_row["language"] == "python"
    assert code_row["tests"] == {"inputs": ["1 2\n"], "outputs": ["3\n"]}
    assert [m["role"] for m in code_row["prompt"]] == ["system", "user"]


def test_parquet_round_trip(tmp_path: Path) -> None:
    rows = [r for r in dirty_rows() if r["source"] == "math"][:4]
    src = tmp_path / "train.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(src))
    main(["--input", str(src), "--output", str(tmp_path / "out.parquet"), "--report", str(tmp_path / "r.json")])
    kept = datasets.load_dataset("parquet", data_files=str(tmp_path / "out.parquet"), split="train").to_list()
    assert [r["id"] for r in kept] == ["keep-math", "keep-marbles"]


def test_text_and_message_prompts_mix_without_changing_values(tmp_path: Path) -> None:
    rows = [{"id": 1, "source": "math", "prompt": "What is 5 * 5?", "answer": "025"},
            {"id": 2, "source": "math", "prompt": [{"role": "user", "content": "What is 2 * 3?"}], "answer": 6},
            {"id": 3, "source": "chat", "messages": [{"role": "user", "content": "Hi!"}]}]
    src = tmp_path / "train.json"  # a JSON list, not JSONL
    src.write_text(json.dumps(rows))
    main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json")])
    assert read_jsonl(tmp_path / "o.jsonl") == rows  # "025" stays a string, ids numbers, `messages` as named


def test_mixing_repeats_rare_categories(tmp_path: Path) -> None:
    rows = [{"id": f"m{i}", "source": "math", "prompt": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(40)]
    rows += [{"id": f"s{i}", "source": "science", "prompt": f"Name chemical element number {i + 1}.", "answer": "x"}
             for i in range(4)]
    src = write_jsonl(tmp_path / "train.jsonl", rows)
    rep = main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json"),
                "mixing.weights={math: 0.5}", "mixing.min_fraction=0.25"])
    assert rep["mixed_by_category"] == {"math": 20, "science": 7}  # 7 / 27 >= 0.25, every science row kept
    mixed = read_jsonl(tmp_path / "o.jsonl")
    assert {r["id"] for r in mixed if r["source"] == "science"} == {f"s{i}" for i in range(4)}


@pytest.mark.parametrize("content, message", [
    ('{"id": 1, "source": "math", "prompt": "What is 1+1?", "answer": "2"}\n{"id": 2, "source": "math", "answer": "3"}\n',
     "row 2 of {path}: field `prompt` (or `messages`) is missing"),
    ('{"id": 1, "source": "math", "prompt": "What is 1+1?", "answer": "2"}\n{"id": 2, "source": "maths", "prompt": "x"}\n',
     "row 2 of {path}: field `source` is 'maths'; expected one of math, code, science, mcq, ifeval, chat"),
    ('{"id": 1, "source": "math", "prompt": "a", "answer": "2"}\n{"id": 1, "source": "math", "prompt": "b", "answer": "2"}\n',
     "row 2 of {path}: id '1' is already used by row 1"),
    ('{"id": 1, "source": "math", "prompt": "a", "answer": "2"}\n{"id": 2, "source": "math", "prompt": "b", "answer": "2"\n',
     "line 2 of {path}: not valid JSON"),
    ('[{"id": 1, "source": "math", "prompt": "a", "answer": "2"},\n {"id": 2, "source": "math", "prompt": "b",]',
     "{path}: not valid JSON at line 2"),
    ('{"id": 1, "source": "math", "prompt": [{"role": "assistant", "content": "hi"}], "answer": "2"}\n',
     "row 1 of {path}: field `prompt` has no message with role `user`"),
])
def test_unreadable_rows_name_file_row_and_field(tmp_path: Path, content: str, message: str) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "amray.data.preprocess", "--input", str(src), "--output",
                           str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message.format(path=src) in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_config_key_is_named(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "train.jsonl", dirty_rows()[:1])
    from amray.config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key rules.proofs"):
        main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json"),
              "rules.proofs=false"])
