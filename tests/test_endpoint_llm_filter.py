"""The LLM filter of `python -m amray.data.preprocess` (rule `ill_posed`) against a fake judge
server: only math queries still kept after the other rules are asked, ill-posed ones are dropped
with the model's reason, and a query the model could not judge is kept, marked unchecked."""

from __future__ import annotations

import json
from pathlib import Path

from amray.data.preprocess import main
from endpoint_fakes import FakeOpenAI

ROWS = [
    {"id": "clear", "source": "math", "prompt": "What is the sum of the first 10 positive integers?", "answer": "55"},
    {"id": "incomplete", "source": "math", "prompt": "Find the area of the triangle.", "answer": "12"},
    {"id": "judge-fails", "source": "math", "prompt": "Compute 17 times 23.", "answer": "391"},
    {"id": "judge-rambles", "source": "math", "prompt": "Compute 19 times 21.", "answer": "399"},
    {"id": "url", "source": "math", "prompt": "Solve the problem at https://example.com/p/1.", "answer": "1"},
    {"id": "chat", "source": "chat", "prompt": "Find the area of my garden for me."},
]


def judge(messages: list[dict]):
    query = messages[-1]["content"].split("[Problem]\n")[1]
    if "triangle" in query:
        return '{"well_posed": false, "reason": "the triangle\'s sides are not given"}'
    if "17 times" in query:
        return 503
    if "19 times" in query:
        return "Let me think about whether this is well posed... it probably is."
    return 'Checked. {"well_posed": true, "reason": "self-contained"}'


def test_ill_posed_math_is_dropped_unjudged_kept_marked(tmp_path: Path) -> None:
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out, rejects, report = tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "report.json"
    with FakeOpenAI(["qwen-judge"]) as fake:
        fake.script = judge
        rep = main(["--input", str(src), "--output", str(out), "--report", str(report), "--rejects", str(rejects),
                    "--no-progress", f"llm_filter.endpoint={fake.url}", "llm_filter.retries=0",
                    "llm_filter.concurrency=3"])
        asked = [m["body"]["messages"][0]["content"] for m in fake.chats()]
        schema = fake.chats()[0]["body"]["response_format"]["json_schema"]["schema"]
    assert len(asked) == 4 and not any("example.com" in q or "garden" in q for q in asked)  # math, still kept
    assert schema["required"] == ["well_posed", "reason"]

    kept = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(kept) == ["chat", "clear", "judge-fails", "judge-rambles"]
    assert "llm_filter" not in kept["clear"]
    for rid, problem in (("judge-fails", "HTTP 503"), ("judge-rambles", 'no {"well_posed": true|false}')):
        assert kept[rid]["llm_filter"] == "unchecked" and problem in kept[rid]["llm_filter_error"]
    dropped = {r["id"]: r for r in map(json.loads, rejects.read_text().splitlines())}
    assert dropped["incomplete"]["reject_rule"] == "ill_posed"
    assert dropped["incomplete"]["reject_detail"] == "the triangle's sides are not given"
    assert dropped["url"]["reject_rule"] == "url"
    assert rep["rejected_by_rule"]["ill_posed"] == 1
    assert rep["llm_filter"] == {"endpoint": fake.url, "checked": 2, "ill_posed": 1, "unchecked": 2}


def test_filter_is_off_without_an_endpoint(tmp_path: Path) -> None:
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    rep = main(["--input", str(src), "--output", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json"),
                "--no-progress"])
    assert rep["rows_out"] == 2 and "ill_posed" not in rep["rejected_by_rule"] and "llm_filter" not in rep
