"""GRPO on a prompt set (AM-Thinking stage 1/2 style), from any local HF model.

    python jobs/grpo.py --config configs/smollm2_cpu.yaml data.train=train.jsonl [key=value ...]
    ray job submit --working-dir . -- python jobs/grpo.py --config configs/gpu_node_7b.yaml

`data.train` / `data.eval`: task rows (`id`, `source`, `prompt` or `messages`, and the source's
ground truth, e.g. `answer` for math; verl rows are converted) as .jsonl / .json / .parquet, a
`datasets` save_to_disk directory or a dataset id (`data.split`); every row is checked for what its
source's reward reads before anything starts. The final model is saved to OUTPUT_DIR/model.
With `checkpoint.every_steps=N` a checkpoint is written every N steps; run the same command again
(`checkpoint.resume=auto`, the default) and it continues after the latest one. SIGTERM (`ray job
stop`) stops it after the current step with a checkpoint, exit status 0.
With `eval.benchmarks=gsm8k,math500 eval.data_dir=DIR` those benchmarks (see jobs/evaluate.py) are
run every `eval.every_steps` steps and after the last, logged as `eval/gsm8k/pass@1` etc.
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
from amray.config import Config, parse_cli  # noqa: E402
from amray.data.records import DataError, write_records  # noqa: E402
from amray.data.rows import read_task_rows, task_rows  # noqa: E402
from amray.evaluation.harness import HELDOUT  # noqa: E402
from amray.jobcli import output_path, prepare_output_dir  # noqa: E402
from amray.ledger import select_prompt_set  # noqa: E402
from amray.metrics import plot_curves  # noqa: E402
from amray.rayenv import where_written  # noqa: E402
from amray.rundata import exit_on_user_error  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_cli(argv, __doc__)
    if not cfg.data.train:
        raise SystemExit("data.train is not set: give a file of task rows, e.g. data.train=train.jsonl")
    if cfg.data.ledger:  # every step appends to it: an output, so never in a job's temporary copy
        cfg.data.ledger = str(output_path(cfg.data.ledger, "data.ledger"))
    t0 = time.time()
    with exit_on_user_error():  # before anything is written or started: rows checked; continue a run,
        rows, selection = train_rows(cfg)  # or refuse to mix two in one directory
        start, fingerprint = checkpoint.plan_resume(cfg, rows)
    out = prepare_output_dir(cfg, "metrics.jsonl, summary.json, curves.png, checkpoints/")
    if selection:
        write_records(out / "prompts.jsonl", rows)
        print(f"prompt set from ledger {cfg.data.ledger}: {selection}")
    summary: dict = {"selection": selection} if selection else {}
    with exit_on_user_error(), Run(cfg, train=rows) as run:
        print(where_written(str(out / "model"), run.learners.ranks[0], "model (saved at the end by learner rank 0)"),
              flush=True)
        result = run.train(start, fingerprint)
        if not result.stopped:
            run.save(out / "model")
    if cfg.data.eval:
        summary.update(accuracy_before=result.before.get(f"eval/{HELDOUT}/pass@1"),
                       accuracy_after=result.after.get(f"eval/{HELDOUT}/pass@1"))
    plot_curves(out / "metrics.jsonl", out / "curves.png")
    summary.update(wall_s=round(time.time() - t0, 1), steps=result.last_step, resumed_from=str(start) if start else None)
    if result.stopped:  # SIGTERM: a checkpoint of the last step is written; the same command continues
        summary.update(stopped=True, checkpoint=str(checkpoint.step_dir(out, result.last_step)))
    else:
        summary.update(model_out=str(out / "model"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def train_rows(cfg: Config) -> tuple[list[dict], dict | None]:
    """`data.train` (verl rows converted, every row checked for its source), or with `data.ledger`
    its selection for `data.ledger_stage` (the job saves it as OUTPUT_DIR/prompts.jsonl: the run's
    prompt set, and stage 2's `data.train`) and its report."""
    d, custom = cfg.data, [cfg.reward.custom_source] if cfg.reward.custom else []
    if not d.ledger:
        if d.chat or d.ifeval:
            raise SystemExit("data.chat / data.ifeval are added to a ledger selection: set data.ledger too")
        return read_task_rows(d.train, d.split, custom), None
    try:
        selection = select_prompt_set(d.ledger, d.train, d.ledger_stage, d.ledger_model or None, None, d.chat,
                                      d.chat_count, d.ifeval, d.ifeval_count, d.shuffle_seed)
    except ValueError as e:  # LedgerError, or a pool file or row that cannot be read
        raise DataError(str(e)) from e
    return task_rows(selection.rows, f"the ledger selection from {d.train}", custom), selection.report


if __name__ == "__main__":
    main()
