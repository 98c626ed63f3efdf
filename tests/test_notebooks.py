"""The notebooks, run top to bottom as a user runs them, headless (nbclient) on this venv's own
kernel: the quickstart brings up its own Ray and actors; attach follows a GRPO job that this test
submits with `ray job submit` to a head of its own, the job's progress read from its logs."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from amray.data.arithmetic import arithmetic_split
from amray.data.records import write_records
from amray.metrics import read_metrics, read_progress
from ray_head import LocalHead, ray_cli, token_env, wait_for_jobs_api, without_venv_on_path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch) -> str:
    """A kernelspec running this interpreter (the venv's), found through JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / "amray-venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "amray venv", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "amray-venv"


def execute(path: Path, kernel: str, env: dict[str, str], monkeypatch, cell_timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in order in a fresh kernel (cwd: the repository) whose environment has `env`;
    a cell that raises fails the test with its traceback."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name=kernel, timeout=cell_timeout,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list[str]:
    """Every output of the notebook of MIME type `kind` ('text/plain' includes printed text)."""
    found = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if kind == "text/plain" and out.get("output_type") == "stream":
                found.append(out["text"])
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_saved_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell holds the parameters"
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_quickstart_runs_top_to_bottom(tmp_path: Path, kernel: str, monkeypatch) -> None:
    out = tmp_path / "run"
    t0 = time.monotonic()
    notebook = execute(ROOT / "notebooks" / "quickstart.ipynb", kernel, {
        "AMRAY_QS_OUTPUT_DIR": str(out), "AMRAY_QS_MODEL_CACHE": str(tmp_path / "models"),
        "AMRAY_QS_SFT_EXAMPLES": "320", "AMRAY_QS_SFT_EPOCHS": "2", "AMRAY_QS_GRPO_STEPS": "3",
        "AMRAY_QS_PROMPTS_PER_STEP": "4", "AMRAY_QS_SAMPLES_PER_PROMPT": "4", "AMRAY_QS_EVAL_PROBLEMS": "8"},
        monkeypatch)
    print(f"quickstart: {time.monotonic() - t0:.0f}s")
    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r["step"] for r in records if "eval/heldout/pass@1" in r] == [0, 3]  # after SFT, after GRPO
    assert len([r for r in records if "sft/loss" in r]) == 2 * 320 // 32
    tables = [t for t in outputs(notebook, "text/html") if "advantage" in t]
    assert tables and all(word in tables[-1] for word in ("group_id", "response", "reward", "truncated"))
    assert len(outputs(notebook, "image/png")) == 2  # the SFT loss; reward, accuracy and length curves
    assert any("held-out pass@1: " in text for text in outputs(notebook, "text/plain"))
    assert (out / "model" / "config.json").is_file()


def test_attach_follows_a_job_submitted_to_ray(tmp_path: Path, kernel: str, monkeypatch) -> None:
    """The job trains on verl-format Parquet rows as they come (converted on reading) with its
    progress bar on: under `ray job submit` stderr is no terminal, so every step also prints a
    plain line, which `ray job logs` shows and the notebook plots from."""
    import pandas

    train, held_out = arithmetic_split(32, 4, seed=5)
    pandas.DataFrame([{"data_source": "arithmetic_math", "prompt": [{"role": "user", "content": r["prompt"]}],
                       "ability": "math", "reward_model": {"style": "rule", "ground_truth": r["answer"]},
                       "extra_info": {"index": i}} for i, r in enumerate(train)]).to_parquet(tmp_path / "train.parquet")
    write_records(tmp_path / "eval.jsonl", held_out)
    token = token_env(tmp_path)  # one token, for the head, the `ray` client and the notebook's client
    env = without_venv_on_path({**os.environ, **token})
    head = LocalHead(env)
    try:
        head.start()
        client = {**env, "RAY_ADDRESS": head.address}
        wait_for_jobs_api(client)
        job_id, out = f"amray-attach-{uuid.uuid4().hex[:8]}", tmp_path / "run"
        submitted = ray_cli("job", "submit", "--no-wait", "--submission-id", job_id, "--working-dir", ".", "--",
                            sys.executable, "jobs/grpo.py", "--output-dir", str(out),
                            f"data.train={tmp_path / 'train.parquet'}", f"data.eval={tmp_path / 'eval.jsonl'}",
                            f"model.cache_dir={tmp_path / 'models'}", "grpo.steps=4", "grpo.prompts_per_step=4",
                            "grpo.samples_per_prompt=2", "rollout.max_tokens=8", "eval.samples=1", "eval.max_tokens=8",
                            "eval.every_steps=2", "reward.num_workers=1", env=client, timeout=300)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        notebook = execute(ROOT / "notebooks" / "attach.ipynb", kernel, {
            **token, "AMRAY_ATTACH_ADDRESS": head.address, "AMRAY_ATTACH_JOB_ID": job_id,
            "AMRAY_ATTACH_SOURCE": "logs", "AMRAY_ATTACH_POLL_S": "3", "AMRAY_ATTACH_TIMEOUT_S": "900"},
            monkeypatch, cell_timeout=1200)
        logs = ray_cli("job", "logs", job_id, env=client).stdout
    finally:
        head.stop()
    printed = "".join(outputs(notebook, "text/plain"))
    assert f"job {job_id}: SUCCEEDED; 4 GRPO steps logged (from the job's logs)" in printed, logs[-3000:]
    assert f"output dir: {out}" in printed  # read from the job's entrypoint
    assert outputs(notebook, "image/png")
    for step in range(1, 5):
        assert f"step {step}/4: reward " in logs
    from_logs = {r["step"]: r for r in read_progress(logs)}
    for record in read_metrics(out / "metrics.jsonl"):  # the logs say what metrics.jsonl holds
        for key, value in from_logs.get(record["step"], {}).items():
            assert abs(record[key] - value) <= 5e-4, (key, record[key], value)
    assert set(from_logs) == {0, 1, 2, 3, 4} and "eval/heldout/pass@1" in from_logs[2]
