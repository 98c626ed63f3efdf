"""SFT: chat-formatted loss on assistant tokens only, on the FSDP2 learner.

    python jobs/sft.py --config configs/smollm2_cpu.yaml data.sft=chats.jsonl sft.epochs=2
    python jobs/sft.py --config configs/am_thinking_32b_sft.yaml data.sft=/data/sft.jsonl   # the paper's recipe

`data.sft`: chat rows with `messages` ([{"role", "content"}, ...]) or `prompt` + `completion`, as
.jsonl / .json / .parquet, a `datasets` directory or a dataset id (`data.split`). Loss on every assistant turn,
or on the final one only (`sft.final_turn_only`); rows cut at `sft.max_length` tokens; a step is
`sft.batch_size` rows or about `sft.batch_tokens` tokens; warmup `sft.warmup_steps` or
`sft.warmup_ratio` of the steps. Checkpoints every `checkpoint.every_steps` updates; the same
command again continues after the latest (`checkpoint.resume=auto`). Saves OUTPUT_DIR/model, which `jobs/grpo.py
model.path=OUTPUT_DIR/model` starts from, and OUTPUT_DIR/summary.json (rows truncated and
dropped, tokens, steps, warmup, losses).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amray import checkpoint  # noqa: E402
from amray.api import Run  # noqa: E402
from amray.config import parse_cli  # noqa: E402
from amray.data.records import read_records  # noqa: E402
from amray.data.rows import chat_rows  # noqa: E402
from amray.jobcli import prepare_output_dir  # noqa: E402
from amray.rayenv import where_written  # noqa: E402
from amray.sft import warmup_steps  # noqa: E402
from amray.rundata import exit_on_user_error  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_cli(argv, __doc__)
    if not cfg.data.sft:
        raise SystemExit("data.sft is not set: give a file of chat rows with `messages`, e.g. data.sft=chats.jsonl")
    t0 = time.time()
    with exit_on_user_error():
        rows = read_records(cfg.data.sft, cfg.data.split)
        conversations = chat_rows(rows, cfg.data.sft)
        start, fingerprint = checkpoint.plan_resume(cfg, rows)  # continue a run, never mix two in one dir
    out = prepare_output_dir(cfg, "metrics.jsonl, summary.json, checkpoints/") / "model"
    with exit_on_user_error(), Run(cfg, sft=conversations, learners_only=True) as run:
        print(where_written(str(out), run.learners.ranks[0], "model (saved at the end by learner rank 0)"), flush=True)
        sft = run.sft(resume=start, fingerprint=fingerprint, checkpoints=True)
        if not sft.stopped:  # SIGTERM: a checkpoint of the last update is written
            run.save(out)
    data, plan, losses = sft.rows.batch, sft.plan, sft.losses
    step_tokens = [sum(len(data.tokens[i]) for i in idx) for _, idx in plan]
    summary = {**sft.rows.report(), "max_length": cfg.sft.max_length, "final_turn_only": cfg.sft.final_turn_only,
               "steps": len(losses), "warmup_steps": warmup_steps(cfg.sft, len(plan)),
               "mean_step_tokens": round(sum(step_tokens) / len(step_tokens), 1), "max_step_tokens": max(step_tokens),
               "first_loss": losses[0], "final_loss": losses[-1], "model_out": None if sft.stopped else str(out),
               "stopped": sft.stopped, "resumed_from": str(start) if start else None,
               "wall_s": round(time.time() - t0, 1)}
    (out.parent / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
