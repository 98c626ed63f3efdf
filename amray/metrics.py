"""Per-step metrics: metrics.jsonl always, wandb when configured (offline works with no network),
a progress bar over steps (or, where no terminal shows one, a plain line per step: what `ray job
logs` and the dashboard show of a job), and the curves plot."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from amray.config import LogConfig


class MetricsLogger:
    """`resume_step`: a resumed run continues after that step: records of later steps (logged
    before the interruption, after its last checkpoint) are dropped, so none is logged twice."""

    def __init__(self, cfg: LogConfig, total_steps: int, run_config: dict | None = None,
                 resume_step: int | None = None) -> None:
        self.dir = Path(cfg.output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(self.path)
        self.file = open(self.path, "a")
        self.wandb = None
        if cfg.wandb_project:
            import wandb

            id_file = self.dir / "wandb_run_id"
            run_id = id_file.read_text().strip() if resume_step is not None and id_file.exists() else None
            self.wandb = wandb.init(project=cfg.wandb_project, mode=cfg.wandb_mode, dir=str(self.dir),
                                    config=run_config or {}, id=run_id, resume="allow" if run_id else None)
            id_file.write_text(self.wandb.id)
        self.total_steps, self.bar = total_steps, None
        if cfg.progress and total_steps:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=resume_step or 0, desc="grpo", unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float], advance: bool = True) -> None:
        record = {"step": step, "time": time.time(), **metrics}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.bar is not None and advance:
            self.bar.update(1)
            shown = {k.split("/")[-1]: round(v, 3) for k, v in metrics.items()
                     if k in ("reward/mean", "time/step_s", "rollout/logprob_mismatch") and isinstance(v, float)}
            self.bar.set_postfix(shown)
        if self.bar is None or not sys.stderr.isatty():  # a bar redrawn in a log file reads as noise
            line = progress_line(step, self.total_steps, metrics)
            if line and self.bar is not None:
                self.bar.write(line, file=sys.stdout)  # on a line of its own, not after the bar's last redraw
                sys.stdout.flush()
            elif line:
                print(line, flush=True)

    def close(self) -> None:
        self.file.close()
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()
            import wandb

            wandb.teardown()  # finish() returns before the service has written the offline run file


PROGRESS = (("reward/mean", "reward"), ("reward/accuracy", "accuracy"), ("response/length_mean", "length"),
            ("reward/error_frac", "reward errors"), ("time/step_s", "step s"))
"""What a step's progress line shows, with every evaluation's pass@1."""


def progress_line(step: int, total: int, metrics: dict) -> str | None:
    """`step 3/10: reward 0.250, accuracy 0.125, ..., heldout pass@1 0.150` for a GRPO step or an
    evaluation; None for other records (SFT steps have their own bar)."""
    shown = [f"{label} {metrics[key]:.3f}" for key, label in PROGRESS if isinstance(metrics.get(key), (int, float))]
    shown += [f"{key.split('/')[1]} pass@1 {value:.3f}" for key, value in metrics.items()
              if key.startswith("eval/") and key.endswith("/pass@1")]
    if not shown:
        return None
    return f"step {step}{f'/{total}' if total else ''}: " + ", ".join(shown)


_PROGRESS_LINE = re.compile(r"^step (\d+)(?:/\d+)?: (.+)$")


def read_progress(logs: str) -> list[dict]:
    """The records behind the progress lines of a job's logs (`ray job logs`, JobSubmissionClient.
    get_job_logs), keyed as in metrics.jsonl (values rounded as printed): a job's metrics where its
    output directory cannot be read (a notebook on a laptop, the run on a cluster)."""
    keys = {label: key for key, label in PROGRESS}
    records = []
    for segment in re.split(r"[\r\n]+", logs):  # a progress bar's redraws end in \r, not \n
        match = _PROGRESS_LINE.match(segment.strip())
        if not match:
            continue
        record: dict = {"step": int(match.group(1))}
        for part in match.group(2).split(", "):
            label, _, value = part.rpartition(" ")
            key = keys.get(label) or (f"eval/{label.removesuffix(' pass@1')}/pass@1" if label.endswith(" pass@1") else None)
            if key:
                record[key] = float(value)
        records.append(record)
    return records


def read_metrics(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


PHASES = (("time/generate_all_busy_s", "generate, every engine busy"), ("time/generate_tail_s", "generate, tail"),
          ("time/reward_s", "reward wait"), ("time/train_s", "train (after generation)"), ("time/sync_s", "weight sync"))


def plot_curves(metrics_path: str | Path, out_png: str | Path) -> None:
    """Training reward per step; at each evaluation, pass@1 of every evaluated task; and each
    step's wall time split into its phases (goodput: where the step's time went)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "reward/mean" in r]
    tasks = sorted({k for r in records for k in r if k.startswith("eval/") and k.endswith("/pass@1")})
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot([r["step"] for r in train], [r["reward/mean"] for r in train], marker=".")
    ax[0].set(title="GRPO training reward", xlabel="step", ylabel="mean reward")
    for i, key in enumerate(tasks):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax[1].plot(*zip(*points), marker="o", color=f"C{i + 1}", label=key.split("/")[1])
    ax[1].set(title="evaluation pass@1", xlabel="step", ylabel="pass@1", ylim=(0, 1))
    if tasks:
        ax[1].legend()
    steps = [r["step"] for r in train]
    bottom = [0.0] * len(train)
    for i, (key, label) in enumerate(PHASES):
        heights = [float(r.get(key, 0.0)) for r in train]
        if any(heights):
            ax[2].bar(steps, heights, bottom=bottom, color=f"C{i}", label=label, width=0.8)
            bottom = [b + h for b, h in zip(bottom, heights)]
    ax[2].plot(steps, [r.get("time/step_s", 0.0) for r in train], color="k", lw=1, label="step wall time")
    ax[2].set(title="step time split", xlabel="step", ylabel="seconds")
    if train:
        ax[2].legend(fontsize=7)
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
