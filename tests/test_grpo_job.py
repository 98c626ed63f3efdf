"""`jobs/grpo.py` end to end (tiny model, real engines, learners and rewards), with benchmarks
run every N steps through the evaluation harness and logged beside the training metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amray.data.arithmetic import arithmetic_split
from amray.metrics import read_metrics
from amray.data.records import write_records as write_jsonl

from evaldata_path import EVALDATA, needs_evaldata  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]


def grpo_job(tmp_path: Path, *overrides: str, timeout: int = 900) -> subprocess.CompletedProcess:
    train, held_out = arithmetic_split(32, 4, seed=3)
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "eval.jsonl", held_out)
    return subprocess.run(
        [sys.executable, "jobs/grpo.py", "--output-dir", str(tmp_path / "run"), f"data.train={tmp_path / 'train.jsonl'}",
         f"data.eval={tmp_path / 'eval.jsonl'}", f"model.cache_dir={tmp_path / 'models'}", "grpo.steps=2",
         "grpo.prompts_per_step=4", "grpo.samples_per_prompt=2", "rollout.max_tokens=8", "eval.samples=2",
         "eval.max_tokens=8", "reward.num_workers=1", "log.progress=false", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@needs_evaldata
def test_grpo_job_runs_benchmarks_every_n_steps(tmp_path: Path) -> None:
    run = grpo_job(tmp_path, "eval.benchmarks=gsm8k,ifeval", f"eval.data_dir={EVALDATA}", "eval.limit=2",
                   "eval.every_steps=1", "bench.gsm8k.max_tokens=4")
    assert run.returncode == 0, run.stderr[-3000:]
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward/mean" in r]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:  # both benchmarks at both steps (every_steps=1), K = eval.samples = 2
        for name in ("gsm8k", "ifeval"):
            assert 0.0 <= r[f"eval/{name}/pass@1"] <= r[f"eval/{name}/pass@2"] <= 1.0
        assert 1.0 <= r["eval/gsm8k/response_tokens"] <= 4.0  # bench.gsm8k.max_tokens
        assert 1.0 <= r["eval/ifeval/response_tokens"] <= 8.0  # eval.max_tokens
    for r in records:  # the held-out set is one more task, evaluated like the benchmarks
        assert 0.0 <= r["eval/heldout/pass@1"] <= r["eval/heldout/pass@2"] <= 1.0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"accuracy_before", "accuracy_after"} <= set(summary)
    assert (tmp_path / "run" / "model" / "config.json").is_file()


@needs_evaldata
@pytest.mark.parametrize("overrides, message", [
    (["eval.benchmarks=gsm8k,gsm9k", f"eval.data_dir={EVALDATA}"], "'gsm9k' is not one of"),
    (["eval.benchmarks=gsm8k"], "eval.data_dir is not"),
    (["eval.benchmarks=gsm8k", "eval.data_dir=/nonexistent"], "gsm8k: data file /nonexistent/gsm8k_test.jsonl not found"),
    (["bench.livecodebench.date_from=2024-13-01"], "bench.livecodebench.date_from: '2024-13-01' is not a date"),
])
def test_bad_benchmark_settings_stop_before_anything_starts(tmp_path: Path, overrides: list[str], message: str) -> None:
    run = grpo_job(tmp_path, *overrides, timeout=120)
    assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
