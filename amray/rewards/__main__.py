"""Offline scorer: `python -m amray.rewards score --input IN.jsonl --output OUT.jsonl [--workers N]`.

Writes every input row, in order, with `reward` and `reward_info` added. A bad row (or a line that
is not a JSON object) is never dropped and never stops the run: it gets reward 0 and
`reward_info.error`. Settings: `--config run.yaml` and dotted overrides such as `reward.timeout_s=5`.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

from amray.rewards.config import RewardConfig
from amray.rewards.types import RewardResult


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m amray.rewards", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score a JSONL file of rows")
    score.add_argument("--input", required=True, help="JSONL, one row per line")
    score.add_argument("--output", required=True, help="JSONL written with `reward` and `reward_info`")
    score.add_argument("--workers", type=int, default=None, help="reward worker actors (default: reward.num_workers)")
    score.add_argument("--config", default=None, help="run config YAML (its `reward` section is used)")
    score.add_argument("overrides", nargs="*", help="dotted overrides, e.g. reward.timeout_s=5")
    args = parser.parse_args(argv)
    config = _reward_config(args.config, args.overrides, parser)
    if args.workers is not None:
        if args.workers < 1:
            parser.error(f"--workers must be >= 1, got {args.workers}")
        config.num_workers = args.workers
    counts = score_file(args.input, args.output, config)
    print(json.dumps(counts), file=sys.stderr)
    return 0


def score_file(input_path: str, output_path: str, config: RewardConfig) -> dict:
    """Score every line of `input_path` into `output_path` through a RewardPool; returns counts."""
    import ray

    from amray.rewards.pool import RewardPool

    if not ray.is_initialized():
        ray.init(num_cpus=max(2, config.num_workers), include_dashboard=False, log_to_driver=False)
    pool = RewardPool(config)
    window = 32 * config.num_workers  # rows in flight; bounds memory on big files
    pending: collections.deque = collections.deque()
    counts = {"rows": 0, "errors": 0, "reward_sum": 0.0}
    start = time.monotonic()

    def flush_one(out) -> None:
        row, ref = pending.popleft()
        result = ref if isinstance(ref, RewardResult) else RewardPool.result(ref)
        counts["rows"] += 1
        counts["errors"] += "error" in result.info
        counts["reward_sum"] += result.reward
        out.write(json.dumps({**row, "reward": result.reward, "reward_info": result.info}) + "\n")

    try:
        with open(input_path, encoding="utf-8") as inp, open(output_path, "w", encoding="utf-8") as out:
            for number, line in enumerate(inp, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    row = None
                    problem = f"line {number} is not valid JSON: {e}"
                if isinstance(row, dict):
                    pending.append((row, pool.submit(row)))
                else:
                    if row is not None:
                        problem = f"line {number} is a JSON {type(row).__name__}, not an object"
                    pending.append(({"line": number, "raw": line.rstrip("\n")}, RewardResult.failed(problem)))
                while len(pending) > window:
                    flush_one(out)
            while pending:
                flush_one(out)
    finally:
        pool.shutdown()
    counts["seconds"] = round(time.monotonic() - start, 2)
    return counts


def _reward_config(path: str | None, overrides: list[str], parser: argparse.ArgumentParser) -> RewardConfig:
    if not path and not overrides:
        return RewardConfig()
    from amray.config import ConfigError, load_config

    try:
        return load_config(path, overrides).reward
    except ConfigError as e:
        parser.error(str(e))


if __name__ == "__main__":
    sys.exit(main())
