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

from amray.cluster import Cluster, init_ray  # noqa: E402
from amray.config import parse_cli, to_dict  # noqa: E402
from amray.data.arithmetic import arithmetic_split, solution_text  # noqa: E402
from amray.evaluation.harness import HELDOUT, heldout_task  # noqa: E402
from amray.metrics import MetricsLogger, plot_curves  # noqa: E402
from amray.models import resolve_model  # noqa: E402
from amray.prompts import PromptSampler, build_prompts, prompt_messages  # noqa: E402
from amray.sft import run_sft, sft_batch  # noqa: E402
from amray.trainer import run_grpo  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_cli(argv, __doc__, default_config=str(ROOT / "configs" / "demo_cpu.yaml"))
    t0 = time.time()
    out = Path(cfg.log.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    init_ray(cfg)
    model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    d = cfg.demo
    train_rows, eval_rows = arithmetic_split(d.train_size, d.eval_size, d.seed, d.max_operand, d.ops)
    sft_rows = train_rows[: d.sft_size]
    unboxed = set(random.Random(d.seed).sample(range(len(sft_rows)), round(d.sft_unboxed_frac * len(sft_rows))))
    conversations = [[*prompt_messages(r, cfg.data.system_prompt),
                      {"role": "assistant", "content": solution_text(r, boxed=i not in unboxed)}]
                     for i, r in enumerate(sft_rows)]
    train_prompts = build_prompts(tokenizer, train_rows, cfg.data.system_prompt)
    eval_prompts = build_prompts(tokenizer, eval_rows, cfg.data.system_prompt)

    cluster = Cluster(cfg, model_dir)
    logger = MetricsLogger(cfg.log, cfg.grpo.steps, to_dict(cfg))
    try:
        t_sft = time.time()
        sft_losses = run_sft(cfg, cluster, sft_batch(tokenizer, conversations), logger)
        t_sft = time.time() - t_sft
        heldout = heldout_task(eval_prompts, cfg.eval, cfg.eval.limit)
        before, after = run_grpo(cfg, cluster, PromptSampler(train_prompts, cfg.data.shuffle_seed), logger, [heldout])
    finally:
        logger.close()
        cluster.shutdown()
    plot_curves(out / "metrics.jsonl", out / "curves.png")
    k, name = cfg.eval.samples, f"eval/{HELDOUT}"
    summary = {
        "accuracy_before": before[f"{name}/pass@1"], "accuracy_after": after[f"{name}/pass@1"],
        "gain": after[f"{name}/pass@1"] - before[f"{name}/pass@1"],
        f"pass@{k}_before": before.get(f"{name}/pass@{k}"), f"pass@{k}_after": after.get(f"{name}/pass@{k}"),
        "eval_problems": len(heldout.problems), "eval_samples_per_problem": k,
        "sft_final_loss": sft_losses[-1], "sft_s": round(t_sft, 1), "grpo_steps": cfg.grpo.steps,
        "wall_s": round(time.time() - t0, 1),
        "learner_workers": cfg.trainer.num_workers, "rollout_engines": cfg.rollout.num_engines,
        "inference_backend": cluster.engines.backend, "weight_sync": cluster.sync_backend,
        "model": cfg.model.path,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
