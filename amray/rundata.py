"""What an amray.Run reads, prepared and checked before any actor starts: its config (a YAML
path, a dict of sections, a Config, with dotted overrides), task rows and chat rows (a file in any
form amray.data.records reads, or rows in memory), benchmark problems; and the one-line errors
the command lines end with when one of them is wrong."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

from amray.checkpoint import ResumeError
from amray.config import Config, ConfigError, SFTConfig, build_section, load_config, validate
from amray.configtree import apply_overrides
from amray.data.records import DataError
from amray.evaluation.benchmarks import BenchmarkError
from amray.jobcli import output_path

Rows = str | Path | list[dict]
"""A data file (.jsonl / .json / .parquet, a `datasets` directory, a dataset id) or rows in memory."""

USER_ERRORS = (ConfigError, DataError, BenchmarkError, ResumeError)
"""What a bad config key, data file, row, benchmark or checkpoint raises: one line says what and where."""


def make_config(config: str | Path | dict | Config | None = None, overrides: list[str] | None = None,
                output_dir: str | Path | None = None) -> Config:
    """A checked Config from a YAML path, a dict of sections or a Config (copied), with dotted
    overrides on top; log.output_dir absolute."""
    overrides = list(overrides or [])
    if isinstance(config, Config):
        cfg = load_config(None, overrides, base=copy.deepcopy(config))
    elif isinstance(config, dict):
        cfg = validate(build_section(Config, apply_overrides(copy.deepcopy(config), overrides), "", Config()))
    else:
        cfg = load_config(config, overrides)
    if output_dir is not None:
        cfg.log.output_dir = str(output_dir)
    cfg.log.output_dir = str(output_path(cfg.log.output_dir, "output_dir" if output_dir is not None else "log.output_dir"))
    return cfg


def origin_of(data: object, what: str) -> str:
    """How errors name data: its file, or `the train rows` for rows given in memory."""
    return str(data) if isinstance(data, (str, Path)) else f"the {what} rows"


def task_rows_of(data: Rows, what: str, split: str, custom_sources: list[str]) -> list[dict]:
    """Task rows, verl rows converted, each checked for what its source's reward reads."""
    from amray.data.rows import read_task_rows, task_rows

    if isinstance(data, (str, Path)):
        return read_task_rows(data, split, custom_sources)
    return task_rows(list(data), origin_of(data, what), custom_sources)


def conversations_of(data: Rows | list[list[dict]], split: str) -> list[list[dict]]:
    """SFT conversations from chat rows (`messages`, or `prompt` + `completion`) or message lists."""
    from amray.data.records import read_records
    from amray.data.rows import chat_rows

    if isinstance(data, (str, Path)):
        return chat_rows(read_records(data, split), str(data))
    return chat_rows([{"messages": r} if isinstance(r, list) else r for r in data], origin_of(data, "sft"))


def prepared_sft(tokenizer, conversations: list[list[dict]], sft: SFTConfig, origin: str):
    """The conversations as learner rows (amray.sft.SFTRows); a chat template that cannot locate
    a turn, or nothing left to train on, is a DataError naming `origin`."""
    from amray.sft import sft_rows

    try:
        prepared = sft_rows(tokenizer, conversations, sft.final_turn_only, sft.max_length)
    except ValueError as e:
        raise DataError(f"{origin}: {e}") from None
    if not len(prepared.batch):
        raise DataError(f"{origin}: no conversation has an assistant token to train on")
    return prepared


def load_benchmark_problems(cfg: Config) -> dict:
    """eval.benchmarks' problems, every row checked (before a model is loaded)."""
    if not cfg.eval.benchmarks:
        return {}
    if not cfg.eval.data_dir:
        raise ConfigError("eval.benchmarks is set but eval.data_dir is not: give the directory of the benchmark files")
    from amray.evaluation.benchmarks import parse_names
    from amray.evaluation.harness import load_problems

    return load_problems(parse_names(cfg.eval.benchmarks), cfg.eval.data_dir, cfg.bench, cfg.eval.limit)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """For the command lines: a bad config key, file, row, benchmark or checkpoint ends the command
    with one line naming it (`error: row 3 of train.jsonl: field `answer` is missing ...`)."""
    try:
        yield
    except USER_ERRORS as e:
        raise SystemExit(f"error: {e}") from e
