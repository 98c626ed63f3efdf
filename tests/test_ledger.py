"""The difficulty ledger on disk: appends from several runs, latest-record semantics, the stage-1 and
stage-2 selection rules, the chat / IFEval mix, the `select` command and its error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from amray.batch import Group, Prompt, Rollout, Sample
from amray.ledger import (LedgerError, PassRate, append, latest_pass_rates, main, read_ledger, record_rollout,
                          select_prompt_set)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[1]


def rate(query: str, p: float, minutes: int = 0, model: str = "sft", run: str = "r1") -> PassRate:
    """A jobs/pass_rate.py record of 4 samples, taken `minutes` after T0."""
    return PassRate(query, "math", p, 4, p, 12.0, 0.0, model, 0, 0, run, "pass_rate", T0 + timedelta(minutes=minutes))


def rows_file(path: Path, ids: list[str], source: str = "math") -> Path:
    path.write_text("".join(json.dumps({"id": i, "source": source, "prompt": f"question {i}", "answer": "7"}) + "\n"
                            for i in ids))
    return path


def rollout(rewards: dict[str, list[float]], weight_version: int) -> Rollout:
    """A GRPO step's rollout: one group of k samples per prompt, rewards as given."""
    groups = []
    for q, rs in rewards.items():
        samples = [Sample(q, s, np.arange(3 + s, dtype=np.int64), np.zeros(3 + s, np.float32), "x", "stop", weight_version)
                   for s in range(len(rs))]
        prompt = Prompt({"id": q, "source": "math", "prompt": q, "answer": "7"}, [1, 2, 3])
        groups.append(Group(q, prompt, samples, np.array(rs, np.float32), [{} for _ in rs]))
    return Rollout(groups)


def test_two_runs_append_and_each_query_keeps_its_latest_record(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    append(ledger, [rate("q1", 0.5), rate("q2", 0.0), rate("q3", 1.0)])
    append(ledger, [rate("q1", 1.0, minutes=10, run="r2"), rate("q4", 0.25, minutes=10, run="r2")])
    append(ledger, [rate("q2", 0.5, minutes=20, model="other")])
    append(ledger, [rate("q3", 0.75, minutes=0, run="r2"),  # same time as r1's q3: appended later, wins
                    rate("q4", 1.0, minutes=5, run="r2")])  # appended later but measured earlier: loses
    assert len(list(ledger.glob("*.parquet"))) == 4 and not list(ledger.glob(".*"))
    table = read_ledger(ledger)
    assert table.num_rows == 8 and table["time"].type.tz == "UTC"

    rates, model = latest_pass_rates(table, "pass_rate", "sft")
    assert model == "sft" and rates == {"q1": 1.0, "q2": 0.0, "q3": 0.75, "q4": 0.25}
    assert latest_pass_rates(table, "pass_rate", "sft", run="r1")[0] == {"q1": 0.5, "q2": 0.0, "q3": 1.0}
    assert latest_pass_rates(table, "pass_rate", "other")[0] == {"q2": 0.5}
    with pytest.raises(LedgerError, match=r"pass-rate records of 2 models \(other, sft\): choose one \(--model\)"):
        latest_pass_rates(table, "pass_rate")
    with pytest.raises(LedgerError, match="the ledger has no rollout records"):
        latest_pass_rates(table, "rollout")


def test_stage_1_keeps_queries_the_model_solves_sometimes(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    append(ledger, [rate("q1", 0.5), rate("q2", 0.0), rate("q3", 1.0), rate("q6", 0.0)])
    append(ledger, [rate("q1", 1.0, minutes=1), rate("q4", 0.25, minutes=1), rate("q6", 0.75, minutes=1)])
    pool = rows_file(tmp_path / "pool.jsonl", ["q1", "q2", "q3", "q4", "q5", "q6"])
    selection = select_prompt_set(ledger, pool, stage=1)
    assert [r["id"] for r in selection.rows] == ["q4", "q6"]  # q5 was never measured: unknown difficulty
    assert selection.rows[0] == {"id": "q4", "source": "math", "prompt": "question q4", "answer": "7"}
    assert selection.report == {"stage": 1, "model": "sft", "pool": 6, "unmeasured": 1, "pass_rate_0": 1,
                                "pass_rate_mixed": 2, "pass_rate_1": 2, "kept": 2, "chat": 0, "ifeval": 0,
                                "total": 2}


def test_stage_2_drops_what_the_stage_1_rollouts_solved_every_time(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    append(ledger, [rate("q2", 1.0, minutes=10**6)])  # a pass-rate record: not a stage-1 rollout
    first = record_rollout(ledger, rollout({"q1": [1, 1], "q2": [1, 0], "q3": [1, 1]}, 3), "sft", 3, stage=1)
    record_rollout(ledger, rollout({"q3": [0, 1]}, 7), "sft", 7, stage=1)  # q3 seen again later: not solved now
    record_rollout(ledger, rollout({"q4": [1, 1]}, 0), "stage1-ckpt", 0, stage=2)  # stage 2's own rollouts

    step = {r["query_id"]: r for r in pq.read_table(first).to_pylist()}  # one step: one part file
    assert step["q2"]["pass_rate"] == 0.5 and step["q2"]["mean_reward"] == 0.5 and step["q2"]["k"] == 2
    assert step["q1"]["mean_response_length"] == 3.5 and step["q1"]["weight_version"] == 3
    assert (step["q1"]["origin"], step["q1"]["stage"], step["q1"]["model"]) == ("rollout", 1, "sft")

    stage1_set = rows_file(tmp_path / "stage1.jsonl", ["q1", "q2", "q3", "q4", "q5"])
    selection = select_prompt_set(ledger, stage1_set, stage=2)
    assert [r["id"] for r in selection.rows] == ["q2", "q3", "q4", "q5"]
    assert (selection.report["pass_rate_1"], selection.report["unmeasured"], selection.report["kept"]) == (1, 2, 4)


def test_stage_2_adds_chat_and_instruction_following_rows_in_the_configured_amounts(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    record_rollout(ledger, rollout({"q1": [1, 1], "q2": [0, 1]}, 1), "sft", 1, stage=1)
    stage1_set = rows_file(tmp_path / "stage1.jsonl", ["q1", "q2", "q3"])
    chat = rows_file(tmp_path / "chat.jsonl", [f"chat-{i}" for i in range(10)], source="chat")
    ifeval = rows_file(tmp_path / "ifeval.jsonl", [f"if-{i}" for i in range(6)], source="ifeval")

    selection = select_prompt_set(ledger, stage1_set, 2, chat=chat, chat_count=4, ifeval=ifeval, ifeval_count=3, seed=5)
    ids = [r["id"] for r in selection.rows]
    assert ids[:2] == ["q2", "q3"] and len(ids) == 2 + 4 + 3 and len(set(ids)) == len(ids)
    assert sum(i.startswith("chat-") for i in ids) == 4 and sum(i.startswith("if-") for i in ids) == 3
    assert (selection.report["chat"], selection.report["ifeval"], selection.report["total"]) == (4, 3, 9)
    again = select_prompt_set(ledger, stage1_set, 2, chat=chat, chat_count=4, ifeval=ifeval, ifeval_count=3, seed=5)
    assert [r["id"] for r in again.rows] == ids  # the draw is seeded
    everything = select_prompt_set(ledger, stage1_set, 2, chat=chat, ifeval=ifeval)  # count 0: the whole file
    assert (everything.report["chat"], everything.report["ifeval"]) == (10, 6)

    with pytest.raises(LedgerError, match=r"chat count 11: .*chat.jsonl has 10 rows"):
        select_prompt_set(ledger, stage1_set, 2, chat=chat, chat_count=11)
    with pytest.raises(LedgerError, match=r"row 1 of .*ifeval.jsonl: source is 'ifeval', expected 'chat'"):
        select_prompt_set(ledger, stage1_set, 2, chat=ifeval)
    clash = rows_file(tmp_path / "clash.jsonl", ["chat-0", "q3"], source="chat")
    with pytest.raises(LedgerError, match=r"id 'q3' of .*clash.jsonl is already a query of the prompt set"):
        select_prompt_set(ledger, stage1_set, 2, chat=clash)


def test_errors_name_the_missing_file_or_the_query_absent_from_the_pool(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    pool = rows_file(tmp_path / "pool.jsonl", ["q1", "q2"])
    with pytest.raises(LedgerError, match=r"ledger .*ledger does not exist: record pass rates into it first"):
        select_prompt_set(ledger, pool, stage=1)
    ledger.mkdir()
    with pytest.raises(LedgerError, match="has no records yet"):
        select_prompt_set(ledger, pool, stage=1)
    append(ledger, [rate("q1", 0.5), rate("q9", 0.5)])
    with pytest.raises(LedgerError, match=r"missing.jsonl: no such file"):
        select_prompt_set(ledger, tmp_path / "missing.jsonl", stage=1)
    with pytest.raises(LedgerError, match=r"query 'q9' of the ledger's pass-rate records of model 'sft' is not in "
                                          r".*pool.jsonl \(1 such queries\)"):
        select_prompt_set(ledger, pool, stage=1)
    with pytest.raises(LedgerError, match="the ledger has no stage-1 rollout records"):
        select_prompt_set(ledger, pool, stage=2)
    with pytest.raises(LedgerError, match="stage 3: the ledger selects for stage 1"):
        select_prompt_set(ledger, pool, stage=3)
    no_id = tmp_path / "no_id.jsonl"
    no_id.write_text(json.dumps({"source": "math", "prompt": "x", "answer": "1"}) + "\n")
    with pytest.raises(LedgerError, match=r"row 1 of .*no_id.jsonl: field `id` is missing"):
        select_prompt_set(ledger, no_id, stage=1)
    (ledger / "00000000000000000000-broken.parquet").write_text("not parquet")
    with pytest.raises(LedgerError, match=r"ledger part .*broken.parquet cannot be read"):
        read_ledger(ledger)


def test_an_empty_selection_is_an_error_that_shows_the_counts(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    append(ledger, [rate("q1", 0.0), rate("q2", 1.0)])
    pool = rows_file(tmp_path / "pool.jsonl", ["q1", "q2"])
    with pytest.raises(LedgerError, match=r'stage-1 prompt set is empty: .*"pass_rate_0": 1, .*"pass_rate_1": 1'):
        select_prompt_set(ledger, pool, stage=1)


def test_select_command_writes_the_prompt_set_and_fails_with_one_line(tmp_path: Path, capsys) -> None:
    ledger = tmp_path / "ledger"
    append(ledger, [rate("q1", 0.5), rate("q2", 0.0), rate("q3", 0.25)])
    pool = rows_file(tmp_path / "pool.jsonl", ["q1", "q2", "q3"])
    ifeval = rows_file(tmp_path / "ifeval.jsonl", ["if-0", "if-1"], source="ifeval")
    out = tmp_path / "stage1.jsonl"
    assert main(["select", "--ledger", str(ledger), "--input", str(pool), "--stage", "1", "--output", str(out),
                 "--add-ifeval", str(ifeval), "--ifeval-count", "1"]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()][:2] == ["q1", "q3"]
    report = json.loads(capsys.readouterr().out)
    assert (report["kept"], report["ifeval"], report["total"], report["output"]) == (2, 1, 3, str(out))

    done = subprocess.run([sys.executable, "-m", "amray.ledger", "select", "--ledger", str(tmp_path / "nowhere"),
                           "--input", str(pool), "--stage", "1", "--output", str(tmp_path / "x.jsonl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ledger ") and "does not exist" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()
