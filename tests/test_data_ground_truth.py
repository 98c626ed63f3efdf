"""Ground truths checked against reference responses by math-verify, and corrected by a second judge
(its answers from a file, or asked of a served judge: a fake OpenAI-compatible server here; the real
`vllm serve` run is in test_endpoint_served.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amray.data.config import GroundTruthConfig
from amray.data.ground_truth import main, majority_answer
from amray.data.rows import DataError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def boxed(answer: str) -> str:
    return f"<think>working...</think> The answer is $\\boxed{{{answer}}}$."


def test_majority_is_by_math_verify_equivalence() -> None:
    cfg = GroundTruthConfig()
    # 0.5 and 1/2 are one answer: 3 of 4 votes.
    assert majority_answer([r"\frac{1}{2}", "0.5", r"\frac12", "3"], cfg) == (r"\frac{1}{2}", 3)
    assert majority_answer(["1", "2", "1", "2"], cfg) == (None, 2)  # a tie is no majority
    assert majority_answer(["7", None, None], cfg) == (None, 1)  # unboxed responses count against


def test_check_flags_corrects_and_drops(tmp_path: Path) -> None:
    rows = [
        {"id": "right", "source": "math", "prompt": "What is 5 * 11?", "answer": "55"},
        {"id": "wrong-fixed", "source": "math", "prompt": "What is 1 / 2 as a decimal?", "answer": "12"},
        {"id": "wrong-kept", "source": "math", "prompt": "What is 2 + 2?", "answer": "5"},
        {"id": "split", "source": "math", "prompt": "Pick 1 or 2.", "answer": "1"},
        {"id": "unreferenced", "source": "math", "prompt": "What is 3 * 3?", "answer": "9"},
        {"id": "code", "source": "code", "prompt": "Print 1.", "tests": {"inputs": [""], "outputs": ["1\n"]}},
    ]
    refs = [
        {"id": "right", "responses": [boxed("55"), boxed("55.0"), boxed("55"), boxed("54"), "no box at all"]},
        {"id": "wrong-fixed", "responses": [boxed(r"\frac{1}{2}"), boxed("0.5"), boxed(r"\frac{1}{2}")]},
        {"id": "wrong-kept", "response": boxed("4")},  # one response per row, id repeated
        {"id": "wrong-kept", "response": boxed("4")},
        {"id": "split", "responses": [boxed("1"), boxed("2")]},
        {"id": "not-in-input", "responses": [boxed("1")]},
    ]
    judge = [{"id": "wrong-fixed", "response": boxed("1/2")}, {"id": "wrong-kept", "answer": "5"}]
    out, rejects, report = tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "report.json"
    main(["--input", str(write_jsonl(tmp_path / "train.jsonl", rows)),
          "--references", str(write_jsonl(tmp_path / "refs.jsonl", refs)),
          "--judge", str(write_jsonl(tmp_path / "judge.jsonl", judge)),
          "--output", str(out), "--report", str(report), "--rejects", str(rejects),
          "ground_truth.correct=true", "ground_truth.drop_disagreeing=true"])

    kept = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert kept["right"]["answer_check"] == "agrees"
    fixed = kept["wrong-fixed"]  # the paper revises the ground truth to the judge's (equivalent) answer
    assert (fixed["answer_check"], fixed["answer"], fixed["answer_original"]) == ("corrected", "1/2", "12")
    assert kept["split"]["answer_check"] == "no_majority"
    assert kept["unreferenced"]["answer_check"] == "no_references"
    assert "answer_check" not in kept["code"]
    dropped = json.loads(rejects.read_text())
    assert dropped["id"] == "wrong-kept" and dropped["reject_rule"] == "answer_disagrees_with_references"
    assert dropped["reference_majority"] == "4"

    rep = json.loads(report.read_text())
    assert rep["answer_check"] == {"agrees": 1, "disagrees": 1, "corrected": 1, "no_majority": 1, "no_references": 1,
                                   "unchecked": 0}
    assert (rep["rows_in"], rep["rows_out"], rep["not_math"], rep["references_without_row"]) == (6, 5, 1, 1)
    # 55 and 55.0 match the answer; 54 and the unboxed one do not; split's "1" does.
    assert (rep["references"], rep["references_correct"]) == (5 + 3 + 2 + 2, 3 + 0 + 0 + 1)


def test_flags_without_correcting_by_default(tmp_path: Path) -> None:
    rows = [{"id": "w", "source": "math", "prompt": "What is 2 + 2?", "answer": "5"}]
    refs = [{"id": "w", "responses": [boxed("4")] * 3}]
    out = tmp_path / "out.jsonl"
    main(["--input", str(write_jsonl(tmp_path / "t.jsonl", rows)), "--references",
          str(write_jsonl(tmp_path / "r.jsonl", refs)), "--output", str(out), "--report", str(tmp_path / "rep.json")])
    row = json.loads(out.read_text())
    assert (row["answer"], row["answer_check"], row["reference_majority"]) == ("5", "disagrees", "4")


def test_reference_rows_need_responses(tmp_path: Path) -> None:
    rows = [{"id": "w", "source": "math", "prompt": "What is 2 + 2?", "answer": "4"}]
    refs = tmp_path / "refs.jsonl"
    refs.write_text('{"id": "w", "responses": ["\\\\boxed{4}"]}\n{"id": "w", "text": "4"}\n')
    with pytest.raises(DataError, match=r"row 2 of .*refs.jsonl: needs `responses` \(a list of strings\) or `response`"):
        main(["--input", str(write_jsonl(tmp_path / "t.jsonl", rows)), "--references", str(refs),
              "--output", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "rep.json")])


def test_served_judge_answers_only_the_disputed_rows_and_failures_stay_unchecked(tmp_path: Path) -> None:
    from endpoint_fakes import FakeOpenAI

    rows = [
        {"id": "agreed", "source": "math", "prompt": "What is 5 * 11?", "answer": "55"},
        {"id": "fixed", "source": "math", "prompt": "What is 1 / 2 as a decimal?", "answer": "12"},
        {"id": "kept-wrong", "source": "math", "prompt": "What is 2 + 2?", "answer": "5"},
        {"id": "judge-500", "source": "math", "prompt": "What is 3 + 3?", "answer": "7"},
        {"id": "judge-rambles", "source": "math", "prompt": "What is 4 + 4?", "answer": "9"},
    ]
    refs = [{"id": "agreed", "responses": [boxed("55")] * 3}, {"id": "fixed", "responses": [boxed("0.5")] * 3},
            {"id": "kept-wrong", "responses": [boxed("4")] * 3}, {"id": "judge-500", "responses": [boxed("6")] * 3},
            {"id": "judge-rambles", "responses": [boxed("8")] * 3}]
    answers = {"1 / 2": boxed(r"\frac{1}{2}"), "2 + 2": boxed("5"), "3 + 3": 500, "4 + 4": "It is eight, I think."}

    def judge(messages: list[dict]):
        question = messages[-1]["content"]
        return next(a for key, a in answers.items() if key in question)

    out, rejects, report = tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "report.json"
    with FakeOpenAI(["o4-mini"]) as fake:
        fake.script = judge
        main(["--input", str(write_jsonl(tmp_path / "t.jsonl", rows)),
              "--references", str(write_jsonl(tmp_path / "r.jsonl", refs)),
              "--output", str(out), "--report", str(report), "--rejects", str(rejects),
              "ground_truth.correct=true", "ground_truth.drop_disagreeing=true", f"ground_truth.judge.endpoint={fake.url}",
              "ground_truth.judge.retries=0"])
        asked = sorted(m["body"]["messages"][0]["content"].split("?")[0] for m in fake.chats())
    assert asked == ["What is 1 / 2 as a decimal", "What is 2 + 2", "What is 3 + 3", "What is 4 + 4"]  # not "agreed"
    assert "Please reason step by step, and put your final answer within \\boxed{}." in fake.chats()[0]["body"]["messages"][0]["content"]

    kept = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (kept["fixed"]["answer_check"], kept["fixed"]["answer"], kept["fixed"]["answer_original"]) == (
        "corrected", r"\frac{1}{2}", "12")
    dropped = json.loads(rejects.read_text())  # the judge sided with the old answer: still disputed, dropped
    assert (dropped["id"], dropped["answer_check"], dropped["judge_answer"]) == ("kept-wrong", "disagrees", "5")
    for rid, problem in (("judge-500", "HTTP 500"), ("judge-rambles", "no \\boxed{} answer")):
        assert kept[rid]["answer_check"] == "unchecked" and kept[rid]["answer"] == rows[[r["id"] for r in rows].index(rid)]["answer"]
        assert problem in kept[rid]["judge_error"], kept[rid]["judge_error"]
    rep = json.loads(report.read_text())
    assert rep["answer_check"] == {"agrees": 1, "disagrees": 1, "corrected": 1, "no_majority": 0, "no_references": 0,
                                   "unchecked": 2}
    assert rep["judge"] == {"endpoint": fake.url, "asked": 4, "agrees_with_majority": 1, "disagrees_with_majority": 1,
                            "failed": 2}
