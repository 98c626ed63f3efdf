"""jobs/pass_rate.py and the GRPO hook through one real vLLM engine (tiny random Qwen2) and real
reward workers: the random model never writes a 13-digit answer (p = 0) and always satisfies an
instruction that any short answer satisfies (p = 1)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.compute as pc
import pytest
import ray

from amray.cluster import init_ray
from amray.config import RolloutConfig, load_config
from amray.ledger import LedgerError, read_ledger, record_rollout, select_prompt_set
from amray.models import build_tiny_model
from amray.prompts import build_prompts
from amray.rewards.config import RewardConfig
from amray.rewards.pool import RewardPool
from amray.engine import EnginePool
from amray.rollout import generate_and_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from jobs.pass_rate import main  # noqa: E402

ROWS = [
    {"id": "big-sum", "source": "math", "prompt": "What is 4938271604938 + 4938271605185?", "answer": "9876543210123"},
    {"id": "big-product", "source": "math", "prompt": "What is 1234567 * 8000009?", "answer": "9876547111103"},
    {"id": "short-answer", "source": "ifeval", "prompt": "Answer in fewer than 500 words: what is a river?",
     "instruction_id_list": ["length_constraints:number_words"],
     "kwargs": [{"relation": "less than", "num_words": 500}]},
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    model_dir = build_tiny_model(tmp_path_factory.mktemp("pass_rate") / "tiny")
    init_ray(load_config(None, []))
    pool = EnginePool(str(model_dir), RolloutConfig(max_tokens=8, max_model_len=256, seed=0))
    yield model_dir, pool
    pool.shutdown()
    ray.shutdown()


def test_pass_rates_land_in_the_ledger_and_a_rerun_resumes(engine, tmp_path: Path) -> None:
    model_dir, pool = engine
    rows = tmp_path / "pool.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in [*ROWS, ROWS[0]]))  # a repeated row is one query
    ledger, out = tmp_path / "ledger", tmp_path / "base-sft"
    refs = tmp_path / "refs.jsonl"
    argv = ["--input", str(rows), "--ledger", str(ledger), "--samples", "3", "--chunk", "2", "--output-dir", str(out),
            "--stage", "0", "--responses", str(refs), f"model.path={model_dir}", "reward.num_workers=1"]
    start = datetime.now(timezone.utc)
    summary = main(argv, engines=pool)

    assert (summary["queries"], summary["measured"], summary["samples_per_query"]) == (3, 3, 3)
    assert (summary["pass_rate_0"], summary["pass_rate_mixed"], summary["pass_rate_1"]) == (2, 0, 1)
    assert summary["run"] == "base-sft" and len(summary["parts"]) == 2  # one ledger part per chunk of 2
    assert json.loads((out / "summary.json").read_text()) == summary
    records = {r["query_id"]: r for r in read_ledger(ledger).to_pylist()}
    assert {q: r["pass_rate"] for q, r in records.items()} == {"big-sum": 0.0, "big-product": 0.0, "short-answer": 1.0}
    for r in records.values():
        assert (r["k"], r["model"], r["weight_version"], r["stage"], r["run"], r["origin"]) == \
            (3, str(model_dir), 0, 0, "base-sft", "pass_rate")
        assert 1 <= r["mean_response_length"] <= 8 and 0 <= r["truncated_frac"] <= 1
        assert start <= r["time"] <= datetime.now(timezone.utc)

    # the sampled responses are reference responses for the ground-truth check
    sampled = [json.loads(line) for line in refs.read_text().splitlines()]
    assert [r["id"] for r in sampled] == ["big-sum", "big-product", "short-answer"]
    assert all(len(r["responses"]) == 3 and r["model"] == str(model_dir) for r in sampled)
    assert [sum(r["rewards"]) / 3 for r in sampled] == [0.0, 0.0, 1.0]
    from amray.data.ground_truth import main as check_ground_truth
    unique = tmp_path / "unique.jsonl"
    unique.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    report = check_ground_truth(["--input", str(unique), "--references", str(refs),
                                 "--output", str(tmp_path / "gt.jsonl"), "--report", str(tmp_path / "gt.json")])
    assert report["references"] == 2 * 3 and report["references_correct"] == 0  # the math rows' 3 responses each
    assert report["answer_check"]["agrees"] == 0 and report["not_math"] == 1

    again = main(argv, engines=pool)  # same run and model: nothing left to measure
    assert (again["measured"], again["already_measured"], again["parts"]) == (0, 3, [])
    assert read_ledger(ledger).num_rows == 3

    # solved-never and solved-always (the repeated row counts twice): stage 1 has no learning signal to keep
    with pytest.raises(LedgerError, match=r'stage-1 prompt set is empty: .*"pass_rate_0": 3, .*"pass_rate_1": 1'):
        select_prompt_set(ledger, rows, stage=1)


def test_grpo_rollouts_recorded_each_step_drive_the_stage_2_selection(engine, tmp_path: Path) -> None:
    model_dir, pool = engine
    from transformers import AutoTokenizer

    prompts = build_prompts(AutoTokenizer.from_pretrained(str(model_dir)), ROWS)
    ledger = tmp_path / "ledger"
    with RewardPool(RewardConfig(num_workers=1)) as rewards:
        for _ in range(2):  # two GRPO steps' rollouts
            rollout = generate_and_score(pool, rewards, prompts, 2, pool.sampling())
            record_rollout(ledger, rollout, str(model_dir), pool.weight_versions()[0], stage=1, run="stage1")
    table = read_ledger(ledger)
    assert table.num_rows == 6 and set(pc.unique(table["k"]).to_pylist()) == {2}
    assert set(pc.unique(table["origin"]).to_pylist()) == {"rollout"}

    stage1_set = tmp_path / "stage1.jsonl"
    stage1_set.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"id": f"chat-{i}", "source": "chat", "prompt": f"hello {i}"}) + "\n"
                            for i in range(3)))
    selection = select_prompt_set(ledger, stage1_set, stage=2, chat=chat, chat_count=2)
    assert [r["id"] for r in selection.rows][:2] == ["big-sum", "big-product"]  # short-answer: solved 100%
    assert (selection.report["pass_rate_1"], selection.report["chat"], selection.report["total"]) == (1, 2, 4)
