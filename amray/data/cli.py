"""What the data commands share: `--config YAML` + dotted overrides, the report, the rejects file."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from amray.data.config import PreprocessConfig, load_preprocess_config
from amray.data.records import DataError, write_records


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                epilog="Overrides go before the options or after `--`, e.g. "
                                       "`rules.proof=false --input a.jsonl ...`.")
    p.add_argument("--input", required=True, help="JSONL, JSON or Parquet rows")
    p.add_argument("--output", required=True, help="kept rows (.jsonl or .parquet)")
    p.add_argument("--report", required=True, help="JSON report: count per rule and totals")
    p.add_argument("--rejects", default=None, help="JSONL of dropped rows with `reject_rule` and `reject_detail`")
    p.add_argument("--config", default=None, help="YAML with the sections of amray.data.config.PreprocessConfig")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. near_duplicates.threshold=0.9")
    return p


def config(args: argparse.Namespace) -> PreprocessConfig:
    return load_preprocess_config(args.config, args.overrides)


def write_rejects(path: str | None, rejected: list[tuple[dict, str, str]]) -> None:
    if path:
        write_records(path, [{**row, "reject_rule": rule, "reject_detail": detail} for row, rule, detail in rejected])


def write_report(path: str | Path, report: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def run(main: Callable[[list[str] | None], dict], argv: list[str] | None = None) -> int:
    """Run a command; a bad file, row or config key ends it with one line naming it (exit 2)."""
    from amray.config import ConfigError

    try:
        report = main(argv)
    except (DataError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}))
    return 0
