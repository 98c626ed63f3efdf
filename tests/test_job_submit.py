"""A job runs under `ray job submit` against a local head, as on a cluster."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# Ray 2.60's dashboard asks for a token; run head and client in token mode with one local token.
# The entrypoint's `python` is the head's PATH: put the venv first, as an activated venv does.
ENV = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def ray_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env or ENV)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_job_under_ray_job_submit(tmp_path):
    port, dashboard = free_port(), free_port()
    assert ray_cli("get-auth-token", "--generate").returncode == 0
    started = ray_cli("start", "--head", f"--port={port}", "--num-cpus=8", f"--dashboard-port={dashboard}",
                      "--include-dashboard=true", "--disable-usage-stats")
    assert started.returncode == 0, started.stderr[-2000:]
    env = dict(ENV, RAY_ADDRESS=f"http://127.0.0.1:{dashboard}")
    out = tmp_path / "demo"
    try:
        deadline = time.time() + 60
        while ray_cli("job", "list", env=env).returncode != 0 and time.time() < deadline:
            time.sleep(2)
        job = ray_cli(
            "job", "submit", "--working-dir", ".", "--", "python", "jobs/demo.py", "--output-dir", str(out),
            "grpo.steps=1", "grpo.prompts_per_step=4", "grpo.samples_per_prompt=2", "demo.sft_size=64",
            "demo.train_size=96", "demo.eval_size=4", "eval.samples=1", "eval.every_steps=0", "log.progress=false",
            f"model.cache_dir={tmp_path / 'models'}",
            timeout=900, env=env)
        assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
        assert "succeeded" in job.stdout.lower()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["learner_workers"] == 2 and summary["rollout_engines"] == 1
        assert summary["inference_backend"].startswith("vllm ")
        assert (out / "metrics.jsonl").read_text().count('"reward/mean"') == 1
        assert (out / "curves.png").stat().st_size > 0
    finally:
        ray_cli("stop", "--force")
