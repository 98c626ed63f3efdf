"""The CPU demo: tiny model -> short SFT -> held-out accuracy -> GRPO -> held-out accuracy.

    python jobs/demo.py --output-dir runs/demo [key=value ...]
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amray.api import Run  # noqa: E402
from amray.config import parse_cli  # noqa: E402
from amray.data.arithmetic import arithmetic_split, solution_text  # noqa: E402
from amray.evaluation.harness import HELDOUT  # noqa: E402
from amray.jobcli import prepare_output_dir  # noqa: E402
from amray.metrics import plot_curves  # noqa: E402
from amray.prompts import prompt_messages  # noqa: E402
from amray.rundata import exit_on_user_error  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_cli(argv, __doc__, default_config=str(ROOT / "configs" / "demo_cpu.yaml"))
    t0 = time.time()
    out = prepare_output_dir(cfg, "metrics.jsonl, summary.json, curves.png")
    (out / "metrics.jsonl").unlink(missing_ok=True)
    d = cfg.demo
    train_rows, eval_rows = arithmetic_split(d.train_size, d.eval_size, d.seed, d.max_operand, d.ops)
    sft_rows = train_rows[: d.sft_size]
    unboxed = set(random.Random(d.seed).sample(range(len(sft_rows)), round(d.sft_unboxed_frac * len(sft_rows))))
    conversations = [[*prompt_messages(r, cfg.data.system_prompt),
                      {"role": "assistant", "content": solution_text(r, boxed=i not in unboxed)}]
                     for i, r in enumerate(sft_rows)]
    with exit_on_user_error(), Run(cfg, train=train_rows, eval=eval_rows, sft=conversations) as run:
        t_sft = time.time()
        sft = run.sft()
        t_sft = time.time() - t_sft
        result = run.train()
        before, after = result.before, result.after
        engines, sync, problems = run.cluster.engines.backend, run.cluster.sync_backend, len(run.heldout.problems)
    plot_curves(out / "metrics.jsonl", out / "curves.png")
    k, name = cfg.eval.samples, f"eval/{HELDOUT}"
    summary = {
        "accuracy_before": before[f"{name}/pass@1"], "accuracy_after": after[f"{name}/pass@1"],
        "gain": after[f"{name}/pass@1"] - before[f"{name}/pass@1"],
        f"pass@{k}_before": before.get(f"{name}/pass@{k}"), f"pass@{k}_after": after.get(f"{name}/pass@{k}"),
        "eval_problems": problems, "eval_samples_per_problem": k,
        "sft_final_loss": sft.losses[-1], "sft_s": round(t_sft, 1), "grpo_steps": cfg.grpo.steps,
        "wall_s": round(time.time() - t0, 1),
        "learner_workers": cfg.trainer.num_workers, "rollout_engines": cfg.rollout.num_engines,
        "inference_backend": engines, "weight_sync": sync,
        "model": cfg.model.path,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
