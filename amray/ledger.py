"""The difficulty ledger: per-query pass rates that outlive runs and stages, and the AM-Thinking
selection rules that read it.

    append(ledger, measure(rollout, model="sft", weight_version=0, stage=0))   # jobs/pass_rate.py
    record_rollout(ledger, rollout, model="sft", weight_version=v, stage=1)   # each GRPO step
    selection = select_prompt_set(ledger, "pool.jsonl", stage=1)               # the next stage's prompts
    python -m amray.ledger select --ledger DIR --input POOL.jsonl --stage 1 --output OUT.jsonl

A ledger is a directory of Parquet part files, one per append: writers never touch each other's
files, and a part appears whole or not at all (written under a dot name, then renamed). Records
are never rewritten; a query measured again gets a new record and readers take each query's
latest (by time; a tie goes to the record appended last). `read_ledger(DIR).to_pandas()` for
analysis.

Selection (AM-Thinking-v1, difficulty-aware query selection):
- stage 1 keeps the pool queries whose latest pass rate under the SFT model is 0 < p < 1
  (records of jobs/pass_rate.py): solved-always and solved-never queries give no GRPO signal;
- stage 2 takes stage 1's prompt set, drops the queries whose latest stage-1 rollout was solved
  100%, and adds chat and instruction-following rows (15k and 5k in the paper).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from amray.batch import Rollout

ORIGINS = ("pass_rate", "rollout")


class LedgerError(ValueError):
    """A ledger, pool or selection that cannot be used; the message names what and why."""


@dataclass
class PassRate:
    """One measurement of one query: k samples of `model` at `weight_version`, scored."""

    query_id: str
    source: str
    pass_rate: float
    """Share of the k samples that passed (amray.batch.passed: reward >= 1)."""
    k: int
    mean_reward: float
    mean_response_length: float
    """Response tokens, averaged over the k samples."""
    truncated_frac: float
    model: str
    weight_version: int
    stage: int
    """The training stage the measurement belongs to (0: before RL)."""
    run: str
    origin: str
    """`pass_rate` (jobs/pass_rate.py) or `rollout` (the samples of a GRPO step)."""
    time: datetime


SCHEMA = pa.schema([
    ("query_id", pa.string()), ("source", pa.string()), ("pass_rate", pa.float64()), ("k", pa.int32()),
    ("mean_reward", pa.float64()), ("mean_response_length", pa.float64()), ("truncated_frac", pa.float64()),
    ("model", pa.string()), ("weight_version", pa.int64()), ("stage", pa.int32()), ("run", pa.string()),
    ("origin", pa.string()), ("time", pa.timestamp("us", tz="UTC")),
])


def query_id(row: dict, where: str) -> str:
    """The row's `id` as text: the key every ledger record and selection joins on."""
    value = row.get("id")
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LedgerError(f"{where}: field `id` is missing or not a string/integer; the ledger keys pass rates by id")
    return str(value)


# --- writing -------------------------------------------------------------------------------------

def measure(rollout: Rollout, model: str, weight_version: int, stage: int, run: str = "",
            origin: str = "pass_rate") -> list[PassRate]:
    """One record per group (prompt) of a rollout."""
    if origin not in ORIGINS:
        raise LedgerError(f"origin {origin!r}: use one of {', '.join(ORIGINS)}")
    now = datetime.now(timezone.utc)
    records = []
    for g in rollout.groups:
        if not g.samples:
            raise LedgerError(f"group {g.id} of the rollout has no samples")
        records.append(PassRate(query_id(g.prompt.row, f"group {g.id} of the rollout"), str(g.prompt.row.get("source", "")),
                                g.pass_rate, len(g.samples), float(g.rewards.mean()), float(g.response_lengths.mean()),
                                float(g.truncated.mean()), model, int(weight_version), int(stage), run, origin, now))
    return records


def append(ledger: str | Path, records: list[PassRate], tag: str = "") -> Path | None:
    """Add `records` to the ledger (created if needed) as a new part file; None when empty."""
    if not records:
        return None
    directory = Path(ledger)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{tag or uuid.uuid4().hex[:8]}.parquet"  # names sort in append order
    tmp = directory / f".{name}.tmp"  # readers skip it; the rename makes the part appear whole
    pq.write_table(pa.Table.from_pylist([asdict(r) for r in records], schema=SCHEMA), tmp)
    os.replace(tmp, directory / name)
    return directory / name


def record_rollout(ledger: str | Path, rollout: Rollout, model: str, weight_version: int, stage: int,
                   run: str = "") -> Path | None:
    """The GRPO loop's hook: each prompt's pass rate in this step's rollout, generated by `model`
    at `weight_version` (the version the samples were drawn from, i.e. before this step's sync)."""
    return append(ledger, measure(rollout, model, weight_version, stage, run, origin="rollout"))


def record_step(ledger: str | Path, rollout: Rollout, model: str, stage: int, run: str, step: int) -> Path | None:
    """`record_rollout` for GRPO step `step` of `run`, at the weight version its samples were drawn
    from. Idempotent per (run, step): a step run again after a resume replaces its own part, so
    the interrupted step is never counted twice."""
    tag = f"step-{hashlib.sha1(run.encode()).hexdigest()[:8]}-{step:06d}"
    for old in Path(ledger).glob(f"*-{tag}.parquet"):
        old.unlink()
    version = min((s.weight_version for s in rollout.samples), default=0)
    return append(ledger, measure(rollout, model, version, stage, run, origin="rollout"), tag)


# --- reading -------------------------------------------------------------------------------------

def read_ledger(ledger: str | Path) -> pa.Table:
    """Every record of the ledger, parts in append order."""
    directory = Path(ledger)
    if not directory.is_dir():
        raise LedgerError(f"ledger {directory} does not exist: record pass rates into it first "
                          f"(python jobs/pass_rate.py --ledger {directory} ...)")
    parts = sorted(directory.glob("*.parquet"))
    if not parts:
        raise LedgerError(f"ledger {directory} has no records yet (no *.parquet part files)")
    tables = []
    for part in parts:
        try:
            tables.append(pq.read_table(part).select(SCHEMA.names).cast(SCHEMA))
        except (pa.ArrowException, OSError, KeyError) as e:
            raise LedgerError(f"ledger part {part} cannot be read ({e}); move it out of the ledger") from e
    return pa.concat_tables(tables)


def latest_pass_rates(table: pa.Table, origin: str, model: str | None = None, stage: int | None = None,
                      run: str | None = None) -> tuple[dict[str, float], str]:
    """Each query's latest pass rate among the records of `origin` (and `model`, `stage`, `run` when
    given), and the model they belong to. Records of two models and no `model`: an error."""
    mask = pc.equal(table["origin"], origin)
    for column, value in (("model", model), ("stage", stage), ("run", run)):
        if value is not None:
            mask = pc.and_(mask, pc.equal(table[column], pa.scalar(value, SCHEMA.field(column).type)))
    records = table.filter(mask)
    what = describe(origin, model, stage, run)
    models = sorted(pc.unique(records["model"]).to_pylist())
    if not models:
        raise LedgerError(f"the ledger has no {what}")
    if len(models) > 1:
        raise LedgerError(f"the ledger has {what} of {len(models)} models ({', '.join(models)}): choose one (--model)")
    records = records.sort_by([("time", "ascending")])  # stable: a tie keeps append order, last wins
    return dict(zip(records["query_id"].to_pylist(), records["pass_rate"].to_pylist())), models[0]


def describe(origin: str, model: str | None, stage: int | None, run: str | None) -> str:
    what = "pass-rate records" if origin == "pass_rate" else "rollout records"
    if stage is not None:
        what = f"stage-{stage} {what}"
    return what + (f" of model {model!r}" if model else "") + (f" from run {run!r}" if run else "")


# --- selection -----------------------------------------------------------------------------------

@dataclass
class Selection:
    """A stage's prompt set and how it was made (counts of what was kept and dropped)."""

    rows: list[dict]
    report: dict[str, object]


def keep(stage: int, pass_rate: float | None) -> bool:
    """The stage's rule for one query; `pass_rate` None: the ledger has no record of it."""
    if stage == 1:
        return pass_rate is not None and 0.0 < pass_rate < 1.0  # no GRPO signal at p = 0 or 1
    return pass_rate is None or pass_rate < 1.0  # stage 2: drop what stage 1 solved every time


def select_prompt_set(ledger: str | Path, pool: str | Path, stage: int, model: str | None = None,
                      run: str | None = None, chat: str | Path = "", chat_count: int = 0,
                      ifeval: str | Path = "", ifeval_count: int = 0, seed: int = 0) -> Selection:
    """The prompt set of `stage` from the rows of `pool` and the ledger, plus `chat_count` rows drawn
    from `chat` and `ifeval_count` from `ifeval` (0: all of the file). Stage 1 reads jobs/pass_rate.py
    records of `model`; stage 2 reads the stage-1 rollouts and takes stage 1's prompt set as `pool`."""
    if stage not in (1, 2):
        raise LedgerError(f"stage {stage}: the ledger selects for stage 1 (0 < p < 1) and stage 2 "
                          "(drop what stage 1 solved 100%)")
    table = read_ledger(ledger)
    rows = read_pool(pool)
    origin, measured_in = ("pass_rate", None) if stage == 1 else ("rollout", 1)
    rates, model = latest_pass_rates(table, origin, model, measured_in, run)
    ids = [query_id(r, f"row {i} of {pool}") for i, r in enumerate(rows, 1)]
    in_pool = set(ids)
    absent = [q for q in rates if q not in in_pool]
    if absent:
        raise LedgerError(f"query {absent[0]!r} of the ledger's {describe(origin, model, measured_in, run)} is not "
                          f"in {pool} ({len(absent)} such queries): select from the pool those records were "
                          "measured on, or narrow the records with --model / --run")
    kept = [r for r, q in zip(rows, ids) if keep(stage, rates.get(q))]
    measured = [rates[q] for q in ids if q in rates]
    report: dict[str, object] = {
        "stage": stage, "model": model, "pool": len(rows), "unmeasured": len(rows) - len(measured),
        "pass_rate_0": sum(p == 0.0 for p in measured), "pass_rate_mixed": sum(0.0 < p < 1.0 for p in measured),
        "pass_rate_1": sum(p == 1.0 for p in measured), "kept": len(kept)}
    taken = set(in_pool)
    for path, count, source in ((chat, chat_count, "chat"), (ifeval, ifeval_count, "ifeval")):
        extra = draw(path, count, source, seed) if path else []
        for r in extra:
            q = query_id(r, f"a row of {path}")
            if q in taken:
                raise LedgerError(f"id {q!r} of {path} is already a query of the prompt set; ids must be unique")
            taken.add(q)
        kept += extra
        report[source] = len(extra)
    report["total"] = len(kept)
    if not kept:
        raise LedgerError(f"the stage-{stage} prompt set is empty: {json.dumps(report)}")
    return Selection(kept, report)


def draw(path: str | Path, count: int, source: str, seed: int) -> list[dict]:
    """`count` rows of `path` (0: all), seeded; every row must be of `source`."""
    rows = read_pool(path)
    for i, r in enumerate(rows, 1):
        query_id(r, f"row {i} of {path}")
        if r.get("source") != source:
            raise LedgerError(f"row {i} of {path}: source is {r.get('source')!r}, expected {source!r}")
    if count < 0 or count > len(rows):
        raise LedgerError(f"{source} count {count}: {path} has {len(rows)} rows")
    return random.Random(seed).sample(rows, count) if count else rows


def read_pool(path: str | Path) -> list[dict]:
    """Task rows of a pool or mix-in file (amray.data.records), errors as LedgerError."""
    from amray.data.records import DataError, read_records

    try:
        return read_records(path)
    except DataError as e:
        raise LedgerError(str(e)) from None


# --- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m amray.ledger", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("select", help="write the prompt set of a stage")
    s.add_argument("--ledger", required=True, help="the ledger directory")
    s.add_argument("--input", required=True, help="the pool (stage 1) or stage 1's prompt set (stage 2)")
    s.add_argument("--stage", type=int, required=True, choices=(1, 2))
    s.add_argument("--output", required=True, help="the selected rows (.jsonl or .parquet)")
    s.add_argument("--model", help="whose records select (default: the only model recorded)")
    s.add_argument("--run", help="only records of this run name")
    s.add_argument("--add-chat", default="", help="chat rows to add")
    s.add_argument("--chat-count", type=int, default=0, help="chat rows drawn (0: all; AM-Thinking: 15000)")
    s.add_argument("--add-ifeval", default="", help="instruction-following rows to add")
    s.add_argument("--ifeval-count", type=int, default=0, help="ifeval rows drawn (0: all; AM-Thinking: 5000)")
    s.add_argument("--seed", type=int, default=0, help="seed of the chat / ifeval draw")
    args = p.parse_args(argv)
    from amray.data.records import write_records

    try:
        selection = select_prompt_set(args.ledger, args.input, args.stage, args.model, args.run, args.add_chat,
                                      args.chat_count, args.add_ifeval, args.ifeval_count, args.seed)
        write_records(args.output, selection.rows)
    except ValueError as e:  # LedgerError, DataError (a file or row that cannot be read)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**selection.report, "output": str(args.output)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
