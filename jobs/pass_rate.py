"""Pass rates for the difficulty ledger: k samples of every query from the rollout engines, each
scored by the reward workers the moment it lands; one ledger record per query (pass rate, k, mean
response length, model, weight version, time, stage, run).

    python jobs/pass_rate.py --input POOL.jsonl --ledger LEDGER_DIR --output-dir runs/pass_rate \\
        [--samples 16] [--stage 0] [--run NAME] [--limit N] [--chunk 256] [--responses REFS.jsonl] \\
        [--config FILE] [key=value ...]
    ray job submit --working-dir . -- python jobs/pass_rate.py --input /data/pool.jsonl --ledger /data/ledger ...

Sampling is the training rollout's (rollout.temperature / top_p / max_tokens): the pass rate is the
one GRPO will see. The model is model.path, recorded under that name. Records are appended every
--chunk queries, so a stopped job keeps what it measured; rerun with the same --run (default: the
output directory's name) and model and it measures only the queries still missing. Under `ray job
submit`, give --input and --ledger as absolute paths the head node sees: relative paths land in the
job's temporary copy of the working directory. Then: python -m amray.ledger select --stage 1 ...

--responses also appends every sampled response, one row per query (`id`, `responses`, `rewards`,
`model`, `weight_version`): the reference responses `python -m amray.data.ground_truth
--references REFS.jsonl` checks the ground truths against.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amray.cluster import init_ray  # noqa: E402
from amray.config import Config, ConfigError, load_config  # noqa: E402
from amray.jobcli import add_config_arguments, config_from_args, keys_epilog, output_path, prepare_output_dir  # noqa: E402
from amray.ledger import PassRate, append, measure, query_id, read_ledger, read_pool  # noqa: E402
from amray.models import resolve_model  # noqa: E402
from amray.data.records import write_records  # noqa: E402
from amray.prompts import build_prompts  # noqa: E402
from amray.rewards.pool import RewardPool  # noqa: E402
from amray.engine import EnginePool  # noqa: E402
from amray.rollout import generate_and_score  # noqa: E402


def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    """This job's flags, then those every job shares (--config, --output-dir, --print-config, overrides)."""
    p = argparse.ArgumentParser(prog="jobs/pass_rate.py", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=keys_epilog(Config, Config()))
    p.add_argument("--input", help="task rows to measure (.jsonl / .json / .parquet, with `id`); required")
    p.add_argument("--ledger", help="the ledger directory (created on first use); required")
    p.add_argument("--samples", type=int, default=16, help="samples per query, k")
    p.add_argument("--stage", type=int, default=0, help="the stage these pass rates are for (0: before RL)")
    p.add_argument("--run", help="run name recorded (default: the output directory's name)")
    p.add_argument("--limit", type=int, default=0, help="only the first N queries")
    p.add_argument("--chunk", type=int, default=256, help="queries per generation round and ledger append")
    p.add_argument("--responses", help="append the sampled responses here (JSONL, one row per query: the "
                                       "reference-response format of amray.data.ground_truth)")
    add_config_arguments(p, output_help="run directory (log.output_dir): config.yaml and summary.json go there")
    args = p.parse_intermixed_args(argv)
    cfg = config_from_args(p, args, load_config)  # --print-config ends here
    for name in ("input", "ledger"):
        if not getattr(args, name):
            p.error(f"--{name} is required")
    for name in ("samples", "chunk"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:  # written by this job: never into a `ray job submit` temporary copy
        args.ledger = str(output_path(args.ledger, "--ledger"))
        args.responses = args.responses and str(output_path(args.responses, "--responses"))
    except ConfigError as e:
        p.error(str(e))
    args.run = args.run or Path(cfg.log.output_dir).name
    return cfg, args


def unique_queries(rows: list[dict], source: str, limit: int) -> list[dict]:
    """One row per id (a mixed pool repeats rows), in file order, the first `limit` (0: all)."""
    by_id: dict[str, dict] = {}
    for i, row in enumerate(rows, 1):
        by_id.setdefault(query_id(row, f"row {i} of {source}"), row)
    queries = list(by_id.values())
    return queries[:limit] if limit else queries


def already_measured(ledger: Path, model: str, run: str) -> set[str]:
    """Queries this run already recorded for this model (none when the ledger is new)."""
    if not any(ledger.glob("*.parquet")):
        return set()
    table = read_ledger(ledger)
    import pyarrow.compute as pc

    mine = pc.and_(pc.and_(pc.equal(table["origin"], "pass_rate"), pc.equal(table["model"], model)),
                   pc.equal(table["run"], run))
    return set(table.filter(mine)["query_id"].to_pylist())


def main(argv: list[str] | None = None, engines: EnginePool | None = None) -> dict:
    """`engines`: an EnginePool already serving model.path (tests); default: start one."""
    cfg, args = parse_args(argv)
    t0 = time.time()
    out = prepare_output_dir(cfg, "summary.json")
    ledger = Path(args.ledger)
    try:
        queries = unique_queries(read_pool(args.input), args.input, args.limit)
        done = already_measured(ledger, cfg.model.path, args.run)
    except ValueError as e:  # LedgerError, DataError: a file or row that cannot be used
        raise SystemExit(f"error: {e}") from e
    if not queries:
        raise SystemExit(f"error: {args.input}: no rows (an empty file)")
    todo = [q for q in queries if str(q["id"]) not in done]
    print(f"{len(queries)} queries, {len(queries) - len(todo)} already measured by run {args.run!r}; "
          f"measuring {len(todo)} x {args.samples} samples")
    records, parts, sampling = measure_queries(cfg, args, ledger, todo, engines) if todo else ([], [], None)
    rates = [r.pass_rate for r in records]
    summary = {
        "queries": len(queries), "measured": len(records), "already_measured": len(queries) - len(todo),
        "samples_per_query": args.samples, "pass_rate_mean": sum(rates) / len(rates) if rates else None,
        "pass_rate_0": sum(p == 0.0 for p in rates), "pass_rate_mixed": sum(0.0 < p < 1.0 for p in rates),
        "pass_rate_1": sum(p == 1.0 for p in rates),
        "mean_response_length": sum(r.mean_response_length for r in records) / len(records) if records else None,
        "model": cfg.model.path, "weight_version": records[0].weight_version if records else None,
        "stage": args.stage, "run": args.run, "ledger": str(ledger), "parts": parts, "sampling": sampling,
        "wall_s": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def measure_queries(cfg: Config, args: argparse.Namespace, ledger: Path, queries: list[dict],
                    engines: EnginePool | None) -> tuple[list[PassRate], list[str], dict]:
    """k samples of each query, scored; a ledger part appended every --chunk queries."""
    init_ray(cfg)
    model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
    from transformers import AutoTokenizer

    prompts = build_prompts(AutoTokenizer.from_pretrained(model_dir), queries, cfg.data.system_prompt)
    for p in prompts:
        if len(p.token_ids) >= cfg.rollout.max_model_len:
            raise SystemExit(f"error: query {p.row['id']!r} has a {len(p.token_ids)}-token prompt, no room to answer "
                             f"within rollout.max_model_len={cfg.rollout.max_model_len}; raise it or drop the row")
    k = args.samples
    rewards = RewardPool(cfg.reward)
    own_engines = None
    records, parts = [], []
    try:
        engines = engines or (own_engines := EnginePool(model_dir, cfg.rollout))
        rewards.warmup()
        sampling, version = engines.sampling(), engines.weight_versions()[0]
        for start in range(0, len(prompts), args.chunk):
            # unseeded requests: the engines are seeded at start (rollout.seed), as in training
            rollout = generate_and_score(engines, rewards, prompts[start:start + args.chunk], k, sampling)
            chunk = measure(rollout, cfg.model.path, version, args.stage, args.run, origin="pass_rate")
            parts.append(str(append(ledger, chunk)))
            if args.responses:
                write_responses(args.responses, rollout, cfg.model.path, version)
            records += chunk
            print(f"{start + len(chunk)}/{len(prompts)} queries: mean pass rate "
                  f"{sum(r.pass_rate for r in chunk) / len(chunk):.3f} ({rollout.generate_s:.1f}s)", flush=True)
    finally:
        rewards.shutdown()
        if own_engines is not None:
            own_engines.shutdown()
    return records, parts, sampling


def write_responses(path: str, rollout, model: str, weight_version: int) -> None:
    """Append one row per query: its k responses and their rewards."""
    write_records(path, [{"id": g.prompt.row["id"], "responses": [s.text for s in g.samples],
                          "rewards": g.rewards.tolist(), "model": model, "weight_version": int(weight_version)}
                         for g in rollout.groups], append=True)


if __name__ == "__main__":
    main()
