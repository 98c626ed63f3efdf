"""GRPO on a prompt set (AM-Thinking stage 1/2 style), from any local HF model.

    python jobs/grpo.py --config configs/smollm2_cpu.yaml data.train=train.jsonl [key=value ...]
    ray job submit --working-dir . -- python jobs/grpo.py --config configs/gpu_node_7b.yaml

`data.train` / `data.eval`: JSONL task rows (`id`, `source`, `prompt` or `messages`, and the
source's ground truth, e.g. `answer` for math). The final model is saved to OUTPUT_DIR/model.
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

from amray.cluster import Cluster, init_ray  # noqa: E402
from amray.config import DataConfig, parse_cli, to_dict  # noqa: E402
from amray.data.records import DataError, read_records, write_records  # noqa: E402
from amray.evaluation.harness import HELDOUT, heldout_task  # noqa: E402
from amray.ledger import select_prompt_set  # noqa: E402
from amray.metrics import MetricsLogger, plot_curves  # noqa: E402
from amray.models import resolve_model  # noqa: E402
from amray.prompts import PromptSampler, build_prompts  # noqa: E402
from amray.trainer import run_grpo  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_cli(argv, __doc__)
    if not cfg.data.train:
        raise SystemExit("data.train is not set: give a JSONL of task rows, e.g. data.train=train.jsonl")
    t0 = time.time()
    out = Path(cfg.log.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, selection = train_rows(cfg.data, out)
    init_ray(cfg)
    model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = build_prompts(tokenizer, rows, cfg.data.system_prompt)
    evals = benchmark_tasks(cfg, tokenizer)  # every row checked before anything starts
    if cfg.data.eval:
        held_out = build_prompts(tokenizer, read_task_rows(cfg.data.eval), cfg.data.system_prompt)
        evals.insert(0, heldout_task(held_out, cfg.eval, cfg.eval.limit))
    cluster = Cluster(cfg, model_dir)
    logger = MetricsLogger(cfg.log, cfg.grpo.steps, to_dict(cfg))
    summary: dict = {"selection": selection} if selection else {}
    try:
        before, after = run_grpo(cfg, cluster, PromptSampler(train, cfg.data.shuffle_seed), logger, evals)
        cluster.learners.save(str(out / "model"))
    finally:
        logger.close()
        cluster.shutdown()
    if cfg.data.eval:
        summary.update(accuracy_before=before[f"eval/{HELDOUT}/pass@1"], accuracy_after=after[f"eval/{HELDOUT}/pass@1"])
    plot_curves(out / "metrics.jsonl", out / "curves.png")
    summary.update(wall_s=round(time.time() - t0, 1), steps=cfg.grpo.steps, model_out=str(out / "model"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def read_task_rows(path: str) -> list[dict]:
    try:
        return read_records(path)
    except DataError as e:
        raise SystemExit(f"error: {e}") from e


def benchmark_tasks(cfg, tokenizer) -> list:
    """`eval.benchmarks` ready to run (problems loaded and checked, prompts tokenized)."""
    if not cfg.eval.benchmarks:
        return []
    if not cfg.eval.data_dir:
        raise SystemExit("eval.benchmarks is set but eval.data_dir is not: give the directory of the benchmark files")
    from amray.evaluation.benchmarks import BenchmarkError, parse_names
    from amray.evaluation.harness import load_problems, prepare_tasks

    try:
        problems = load_problems(parse_names(cfg.eval.benchmarks), cfg.eval.data_dir, cfg.bench, cfg.eval.limit)
        return prepare_tasks(problems, tokenizer, cfg.eval, cfg.bench, cfg.rollout.max_model_len, cfg.data.system_prompt)
    except BenchmarkError as e:
        raise SystemExit(f"error: {e}") from e


def train_rows(d: DataConfig, out: Path) -> tuple[list[dict], dict | None]:
    """`data.train`, or with `data.ledger` its selection for `data.ledger_stage` (saved as
    OUTPUT_DIR/prompts.jsonl: the run's prompt set, and stage 2's `data.train`)."""
    if not d.ledger:
        if d.chat or d.ifeval:
            raise SystemExit("data.chat / data.ifeval are added to a ledger selection: set data.ledger too")
        return read_task_rows(d.train), None
    try:
        selection = select_prompt_set(d.ledger, d.train, d.ledger_stage, d.ledger_model or None, None, d.chat,
                                      d.chat_count, d.ifeval, d.ifeval_count, d.shuffle_seed)
    except ValueError as e:  # LedgerError, or a pool file or row that cannot be read
        raise SystemExit(f"error: {e}") from e
    write_records(out / "prompts.jsonl", selection.rows)
    print(f"prompt set from ledger {d.ledger}: {selection.report}")
    return selection.rows, selection.report


if __name__ == "__main__":
    main()
