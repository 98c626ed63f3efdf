"""benchmarks/gpu_learner.py, the check a lent GPU machine runs (one FSDP2 rank driven in-process,
no Ray), on the CPU with the tiny architecture: it must keep running, and what it checks must hold
here too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_learner_check_runs_on_the_cpu_and_its_equalities_hold(tmp_path: Path) -> None:
    out = tmp_path / "gpu_learner.json"
    run = subprocess.run([sys.executable, "benchmarks/gpu_learner.py", "--device", "cpu", "--arch", "tiny",
                          "--rows", "16", "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    (arch,) = json.loads(out.read_text())["archs"]
    pv = arch["packed_vs_padded"]
    assert pv["grad_norm"][0] == pytest.approx(pv["grad_norm"][1], rel=1e-4)
    assert pv["loss"][0] == pytest.approx(pv["loss"][1], rel=1e-5)
    so = arch["streamed_vs_one"]
    assert so["grad_norm"][0] == pytest.approx(so["grad_norm"][1], rel=1e-4)
    assert arch["checkpoint"]["moved_by_update"] > 0 and arch["checkpoint"]["max_abs_dlogp_restored"] == 0.0
    firsts = {name: v["first_step"]["grad_norm"] for name, v in arch["throughput"].items()}
    assert max(firsts.values()) == pytest.approx(min(firsts.values()), rel=0.02), firsts  # bf16 or fp32: same step
    assert all(v["tokens"] == arch["throughput"]["packed"]["tokens"] for v in arch["throughput"].values())
    assert (tmp_path / "tiny.prof.txt").read_text().count("aten::") > 5
