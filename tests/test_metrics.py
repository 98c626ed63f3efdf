"""metrics.jsonl, the curves plot, and Weights & Biases offline (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amray.config import LogConfig
from amray.metrics import MetricsLogger, plot_curves, read_metrics


def test_wandb_offline_records_every_step_beside_metrics_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: any upload would fail
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = LogConfig(output_dir=str(tmp_path), wandb_project="amray-test", progress=False)
    logger = MetricsLogger(cfg, 3, run_config={"grpo": {"samples_per_prompt": 16}})
    for step in range(3):
        logger.log(step, {"reward/mean": 0.25 * step, "time/step_s": 1.5})
    logger.log(2, {"eval/heldout/pass@1": 0.625}, advance=False)
    logger.close()

    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 2] and records[2]["reward/mean"] == 0.5
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1  # an offline run, kept for `wandb sync`
    data = runs[0].read_bytes()
    for key in (b"reward/mean", b"time/step_s", b"eval/heldout/pass@1", b"samples_per_prompt", b"0.625"):
        assert key in data, key


def test_curves_plot_reward_and_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "reward/mean": s / 10} for s in range(5)] + [{"step": 4, "eval/heldout/pass@1": 0.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_curves(path, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
