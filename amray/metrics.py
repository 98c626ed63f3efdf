"""Per-step metrics: metrics.jsonl always, wandb when configured (offline works with no network),
a progress bar over steps, and the curves plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from amray.config import LogConfig


class MetricsLogger:
    def __init__(self, cfg: LogConfig, total_steps: int, run_config: dict | None = None) -> None:
        self.dir = Path(cfg.output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.file = open(self.path, "a")
        self.wandb = None
        if cfg.wandb_project:
            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, mode=cfg.wandb_mode, dir=str(self.dir),
                                    config=run_config or {})
        self.bar = None
        if cfg.progress and total_steps:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, desc="grpo", unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], advance: bool = True) -> None:
        record = {"step": step, "time": time.time(), **metrics}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.bar is not None and advance:
            self.bar.update(1)
            shown = {k.split("/")[-1]: round(v, 3) for k, v in metrics.items()
                     if k in ("reward/mean", "time/step_s", "rollout/logprob_mismatch")}
            self.bar.set_postfix(shown)

    def close(self) -> None:
        self.file.close()
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()
            import wandb

            wandb.teardown()  # finish() returns before the service has written the offline run file


def read_metrics(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(metrics_path: str | Path, out_png: str | Path) -> None:
    """Training reward per step and, at each evaluation, pass@1 of every evaluated task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "reward/mean" in r]
    tasks = sorted({k for r in records for k in r if k.startswith("eval/") and k.endswith("/pass@1")})
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot([r["step"] for r in train], [r["reward/mean"] for r in train], marker=".")
    ax[0].set(title="GRPO training reward", xlabel="step", ylabel="mean reward")
    for i, key in enumerate(tasks):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax[1].plot(*zip(*points), marker="o", color=f"C{i + 1}", label=key.split("/")[1])
    ax[1].set(title="evaluation pass@1", xlabel="step", ylabel="pass@1", ylim=(0, 1))
    if tasks:
        ax[1].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
