"""Offline scorer: `python -m amray.rewards score --input IN.jsonl --output OUT.jsonl [--workers N]`.

Writes every input row, in order, with `reward` and `reward_info` added. A bad row (or a line that
is not a JSON object, or not UTF-8 text) is never dropped and never stops the run: it gets reward 0
and `reward_info.error`; an unreadable line is written as {"line": N, "raw": its text}. Settings: `--config run.yaml` and dotted overrides such as `reward.timeout_s=5`.
It joins Ray as every amray command does (amray.rayenv.init_ray): under `ray job submit` the
cluster it was submitted to, else a fresh local Ray. A progress bar counts rows (`log.progress=false`
hides it).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from amray.rewards.config import RewardConfig
from amray.rewards.types import RewardResult


def main(argv: list[str] | None = None) -> int:
    from amray.config import Config, ConfigError, load_config
    from amray.jobcli import keys_epilog, output_path
    from amray.rayenv import init_ray

    parser = argparse.ArgumentParser(prog="python -m amray.rewards", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score a JSONL file of rows", epilog=keys_epilog(Config, Config()),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("--input", required=True, help="JSONL, one row per line")
    score.add_argument("--output", required=True, help="JSONL written with `reward` and `reward_info`")
    score.add_argument("--workers", type=int, default=None, help="reward worker actors (default: reward.num_workers)")
    score.add_argument("--config", default=None, help="run config YAML (its `reward` section is used)")
    score.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    score.add_argument("overrides", nargs="*", help="dotted overrides, e.g. reward.timeout_s=5 (keys below)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        score.error(f"--workers must be >= 1, got {args.workers}")
    overrides = [*args.overrides, *([f"reward.num_workers={args.workers}"] if args.workers is not None else [])]
    try:
        cfg = load_config(args.config, overrides)
        out = output_path(args.output, "--output")
    except ConfigError as e:
        score.error(str(e))
    if args.print_config:
        from amray.configtree import to_yaml

        print(to_yaml(cfg), end="")
        return 0
    if not Path(args.input).is_file():
        score.error(f"--input {args.input}: no such file (in {Path.cwd()})")
    out.parent.mkdir(parents=True, exist_ok=True)
    init_ray(cfg)
    print(f"scoring {Path(args.input).resolve()} -> {out}", file=sys.stderr, flush=True)
    counts = score_file(args.input, str(out), cfg.reward, progress=cfg.log.progress)
    print(json.dumps(counts), file=sys.stderr)
    return 0


def score_file(input_path: str, output_path: str, config: RewardConfig, progress: bool = False) -> dict:
    """Score every line of `input_path` into `output_path` through a RewardPool; returns counts.
    Ray must be up (amray.rayenv.init_ray; a bare ray.init() also works): this never starts it
    with resources of its own, which would fail inside a running cluster."""
    from tqdm import tqdm

    from amray.data.records import DataError, json_line
    from amray.rewards.pool import RewardPool

    with open(input_path, "rb") as f:
        total = sum(1 for line in f if line.strip())  # cheap next to scoring; gives the bar its end
    bar = tqdm(total=total, desc="score", unit="row", disable=not progress, mininterval=2)
    pool = RewardPool(config)
    window = 32 * config.num_workers  # rows in flight; bounds memory on big files
    pending: collections.deque = collections.deque()
    counts = {"rows": 0, "errors": 0, "reward_sum": 0.0}
    start = time.monotonic()

    def flush_one(out) -> None:
        row, ref = pending.popleft()
        result = ref if isinstance(ref, RewardResult) else pool.result(ref)
        counts["rows"] += 1
        counts["errors"] += "error" in result.info
        counts["reward_sum"] += result.reward
        out.write(json.dumps({**row, "reward": result.reward, "reward_info": result.info}) + "\n")
        bar.update(1)

    try:  # bytes in: a line that is not UTF-8 is one error row, never the end of the file
        with open(input_path, "rb") as inp, open(output_path, "w", encoding="utf-8") as out:
            for number, line in enumerate(inp, 1):
                if not line.strip():
                    continue
                row = json_line(line, number, input_path)
                if isinstance(row, dict):
                    pending.append((row, pool.submit(row)))
                else:
                    problem = str(row) if isinstance(row, DataError) else \
                        f"line {number} of {input_path}: a JSON {type(row).__name__}, not an object"
                    raw = line.decode("utf-8", errors="replace").rstrip("\r\n")
                    pending.append(({"line": number, "raw": raw}, RewardResult.failed(problem)))
                while len(pending) > window:
                    flush_one(out)
            while pending:
                flush_one(out)
    finally:
        bar.close()
        pool.shutdown()
    counts["seconds"] = round(time.monotonic() - start, 2)
    return counts


if __name__ == "__main__":
    sys.exit(main())
