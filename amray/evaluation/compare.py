"""Models side by side: pass@1 (± standard error) of each benchmark in each summary.json, as a
table and a grouped bar chart.

    python -m amray.evaluation compare runs/base/summary.json runs/grpo/summary.json --output cmp.png
"""

from __future__ import annotations

import json
from pathlib import Path


def load_summary(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such summary.json")
    data = json.loads(path.read_text())
    if not isinstance(data.get("benchmarks"), dict):
        raise ValueError(f"{path}: not an evaluation summary (no `benchmarks` section)")
    return data


def default_labels(paths: list[str | Path], summaries: list[dict]) -> list[str]:
    """The model each summary names, else its directory; made unique by position if they clash."""
    labels = [str(s.get("model") or Path(p).resolve().parent.name) for p, s in zip(paths, summaries)]
    labels = [Path(label).name or label for label in labels]
    return labels if len(set(labels)) == len(labels) else [f"{i + 1}:{label}" for i, label in enumerate(labels)]


def comparison_table(labels: list[str], summaries: list[dict]) -> str:
    """pass@1 ± stderr (%) per benchmark and model; with two models, the difference (2nd - 1st)."""
    names = list(dict.fromkeys(n for s in summaries for n in s["benchmarks"]))
    width = max(18, *(len(label) + 2 for label in labels))
    header = f"{'benchmark':<14}" + "".join(f"{label:>{width}}" for label in labels)
    if len(summaries) == 2:
        header += f"{'delta':>8}"
    lines = [header, "-" * len(header)]
    for name in names:
        cells, values = [], []
        for s in summaries:
            m = s["benchmarks"].get(name)
            values.append(None if m is None else m["pass@1"])
            cells.append("-" if m is None else f"{100 * m['pass@1']:.1f} ± {100 * m['pass@1_stderr']:.1f}")
        line = f"{name:<14}" + "".join(f"{c:>{width}}" for c in cells)
        if len(summaries) == 2:
            line += f"{'-' if None in values else f'{100 * (values[1] - values[0]):+.1f}':>8}"
        lines.append(line)
    return "\n".join(lines)


def bar_chart(labels: list[str], summaries: list[dict], output: str | Path) -> Path:
    """Grouped bars: one group per benchmark, one bar per model, stderr as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(dict.fromkeys(n for s in summaries for n in s["benchmarks"]))
    x = np.arange(len(names))
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) + 2), 4))
    for i, (label, s) in enumerate(zip(labels, summaries)):
        ms = [s["benchmarks"].get(n) for n in names]
        ax.bar(x + (i - (len(summaries) - 1) / 2) * width, [100 * m["pass@1"] if m else 0 for m in ms], width,
               yerr=[100 * m["pass@1_stderr"] if m else 0 for m in ms], capsize=3, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set(ylabel="pass@1 (%)", title="pass@1 by benchmark (± standard error)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
