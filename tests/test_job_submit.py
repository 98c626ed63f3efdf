"""Jobs under `ray job submit` against a local head started as the README says: `ray start --head`
from the venv's `ray` in a shell that did not activate the venv, token authentication on (Ray
2.60), and the entrypoint naming amray's Python. Another Ray runs beside it the whole time (someone
else's cluster) and must survive this module."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from amray.config import load_config
from ray_head import LocalHead, ray_cli, token_env, wait_for_jobs_api, without_venv_on_path

PYTHON = sys.executable  # the README's "$PWD/.venv/bin/python"


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """(ours, bystander, env for the `ray` client): the bystander is a second Ray of the same user."""
    env = without_venv_on_path({**os.environ, **token_env(tmp_path_factory.mktemp("token"))})
    bystander = LocalHead(env, num_cpus=0, dashboard=False)
    head = LocalHead(env)
    try:
        bystander.start()
        head.start()
        client = {**env, "RAY_ADDRESS": head.address}
        wait_for_jobs_api(client)
        yield head, bystander, client
    finally:
        head.stop()
        bystander.stop()


def submit(client: dict, *entrypoint: str, timeout: float = 900):
    return ray_cli("job", "submit", "--working-dir", ".", "--", *entrypoint, env=client, timeout=timeout)


def test_a_client_without_token_mode_is_refused_as_the_readme_warns(heads) -> None:
    _, _, client = heads
    plain = {k: v for k, v in client.items() if not k.startswith("RAY_AUTH_")}
    listed = ray_cli("job", "list", env=plain)
    assert listed.returncode != 0 and "RAY_AUTH_MODE" in listed.stdout + listed.stderr


def test_demo_job_writes_where_it_says(heads, tmp_path: Path) -> None:
    _, _, client = heads
    out = tmp_path / "demo"
    job = submit(client, PYTHON, "jobs/demo.py", "--output-dir", str(out),
                 "grpo.steps=1", "grpo.prompts_per_step=4", "grpo.samples_per_prompt=2", "demo.sft_size=64", "sft.epochs=1",
                 "demo.train_size=96", "demo.eval_size=4", "eval.samples=1", "eval.every_steps=0", "log.progress=false",
                 f"model.cache_dir={tmp_path / 'models'}")
    assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
    assert "succeeded" in job.stdout.lower()
    assert f"outputs: {out} (on " in job.stdout  # the driver says where its files go
    summary = json.loads((out / "summary.json").read_text())
    assert summary["learner_workers"] == 2 and summary["rollout_engines"] == 1
    assert summary["inference_backend"].startswith("vllm ")
    assert (out / "metrics.jsonl").read_text().count('"reward/mean"') == 1
    assert (out / "curves.png").stat().st_size > 0
    resolved = load_config(out / "config.yaml")  # the run's resolved config, loadable as --config
    assert resolved.grpo.steps == 1 and resolved.log.output_dir == str(out) and resolved.demo.sft_size == 64


def test_offline_scorer_joins_the_cluster_it_is_submitted_to(heads, tmp_path: Path) -> None:
    _, _, client = heads
    rows = [{"id": "a", "source": "math", "response": "\\boxed{4}", "answer": "4"},
            {"id": "b", "source": "math", "response": "\\boxed{5}", "answer": "4"}]
    inp, out = tmp_path / "in.jsonl", tmp_path / "scored" / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = submit(client, PYTHON, "-m", "amray.rewards", "score", "--input", str(inp), "--output", str(out),
                 "--workers", "1", timeout=300)
    assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
    assert [json.loads(line)["reward"] for line in out.read_text().splitlines()] == [1.0, 0.0]


def test_a_relative_output_path_is_refused_inside_the_jobs_temporary_copy(heads, tmp_path: Path) -> None:
    _, _, client = heads
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "source": "math", "response": "\\boxed{4}", "answer": "4"}) + "\n")
    job = submit(client, PYTHON, "-m", "amray.rewards", "score", "--input", str(inp), "--output", "scored.jsonl",
                 timeout=300)
    assert job.returncode != 0
    logs = job.stdout + job.stderr
    assert "--output scored.jsonl is a relative path" in logs and "temporary copy of its working directory" in logs


def test_stopping_our_head_leaves_every_other_ray_running(heads) -> None:
    head, bystander, _ = heads
    assert head.alive() and bystander.alive()
    head.stop()
    assert not head.alive()
    assert bystander.alive(), "stopping this test's Ray stopped someone else's Ray too"
