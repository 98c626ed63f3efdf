"""A GRPO job killed and run again continues exactly (jobs/grpo.py, real components): SIGKILL
after a checkpoint, SIGTERM (`ray job stop`), and a second run refused in a directory that holds one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amray.checkpoint import complete
from amray.data.records import read_records, write_records
from amray.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
REWARD = Path(__file__).parent / "data" / "first_letter_reward.py"
STEPS = 6  # room after each interruption: a step of this job can take under a second


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_records(path, [{"id": f"q{i}", "source": "custom", "prompt": f"Name a thing, number {i}."} for i in range(24)])
    return path


def command(out: Path, train: Path, *extra: str) -> list[str]:
    return [sys.executable, "jobs/grpo.py", "--output-dir", str(out), f"data.train={train}", f"grpo.steps={STEPS}",
            "grpo.prompts_per_step=4", "grpo.samples_per_prompt=4", "grpo.zero_truncated=false",
            "rollout.max_tokens=2", "rollout.max_model_len=128", "trainer.lr=1e-3", "trainer.warmup_steps=1",
            "trainer.min_lr_ratio=0.1", "reward.num_workers=1", f"reward.custom={REWARD}:reward",
            "checkpoint.every_steps=1", "log.progress=false", *extra]


def uninterrupted(train: Path) -> list[dict]:
    """What an uninterrupted STEPS-step run logs as each step's prompts and learning rate: the seeded
    prompt order (data.shuffle_seed=0) and the warmup + cosine schedule of the command above."""
    from amray.batch import Prompt, Rollout, Group
    from amray.learner import warmup_cosine
    from amray.prompts import PromptSampler
    from amray.trainer import prompts_hash

    sampler = PromptSampler([Prompt(row, []) for row in read_records(train)], seed=0)
    return [{"data/prompts_hash": prompts_hash(Rollout([Group(str(i), p, [], None) for i, p in enumerate(sampler.next(4))])),
             "train/lr": 1e-3 * warmup_cosine(step - 1, STEPS, 1, 0.1)} for step in range(1, STEPS + 1)]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(proc: subprocess.Popen, condition, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the job ended before it got there"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def steps(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if "reward/mean" in r]


def test_a_run_stopped_and_killed_resumes_exactly(tmp_path: Path, train_file: Path) -> None:
    """SIGTERM (`ray job stop`) after step 1: a checkpoint, exit 0. The same command continues;
    SIGKILL to it and what it started (a lost node) after a later checkpoint; the same command
    again finishes. metrics.jsonl has every step once, with an uninterrupted run's prompts and lr."""
    out = tmp_path / "run"
    proc = start(command(out, train_file), tmp_path / "first.log")
    try:
        wait_for(proc, lambda: (out / "metrics.jsonl").exists() and len(steps(out)) >= 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    summary = json.loads((out / "summary.json").read_text())
    k = len(steps(out))
    assert summary["stopped"] and Path(summary["checkpoint"]).name == f"step_{k:06d}" and k <= STEPS - 3

    proc = start(command(out, train_file), tmp_path / "second.log")
    try:
        wait_for(proc, lambda: (out / "checkpoints" / f"step_{k + 1:06d}" / "driver.json").exists())
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and what it started
    finally:
        proc.wait()
    m = int(complete(out)[-1].name.removeprefix("step_"))  # a step may have finished as the kill landed
    assert k + 1 <= m < STEPS, (k, m)

    rerun = subprocess.run(command(out, train_file), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resumed from" in rerun.stdout
    logged = steps(out)
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1))  # none twice, none missing
    for mine, expected in zip(logged, uninterrupted(train_file)):
        assert mine["data/prompts_hash"] == expected["data/prompts_hash"]
        assert mine["train/lr"] == pytest.approx(expected["train/lr"], rel=1e-12)
    restarts = [r for r in read_metrics(out / "metrics.jsonl") if "resume/from_step" in r]
    assert [r["resume/from_step"] for r in restarts] == [k, m]
    for r in restarts:  # the engines served exactly the weights of the sync after that step
        assert r["sync/weights_hash"] == logged[r["resume/from_step"] - 1]["sync/weights_hash"]


def test_a_second_run_is_not_appended_to_a_directory_holding_one(tmp_path: Path, train_file: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n')
    run = subprocess.run(command(out, train_file, "checkpoint.every_steps=0"), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0 and "checkpoint.resume=auto" in run.stderr
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "reward/mean": 0.5}\n'  # untouched
