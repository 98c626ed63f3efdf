"""Clean training queries the AM-Thinking-v1 way (section 2.1 of the paper).

    python -m amray.data.preprocess --input IN --output OUT --report REPORT \\
        [--decontaminate EVAL [EVAL ...]] [--rejects REJECTS] [--config YAML] [key=value ...]

Rules, in the order they run (each switchable in `PreprocessConfig`; a row is dropped by the
first rule it breaks): URLs, image references, proofs, multi-part questions, multiple-choice math
(rewritten to fill-in, or dropped when it cannot be), math without a usable answer, exact and
near duplicates, matches with any eval file (exact, 13-gram, embedding similarity), then, with
`llm_filter.endpoint` set, math queries a served LLM judges ill posed (`ill_posed`; a query it
could not judge is kept with `llm_filter: unchecked` and the reason in `llm_filter_error`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm import tqdm

from amray.data import dedup, rules
from amray.data.choices import rewrite_multiple_choice
from amray.data.cli import config, parser, run, write_rejects, write_report
from amray.data.config import PreprocessConfig
from amray.data.decontam import Decontaminator, load_eval_queries
from amray.data.mixing import category_counts, mix
from amray.data.records import write_records
from amray.data.rows import Row, read_rows

RULES = ("url", "image_reference", "proof", "multi_subquestion", "multiple_choice_unresolved", "no_answer",
         "exact_duplicate", "near_duplicate", "contaminated_exact", "contaminated_ngram", "contaminated_embedding",
         "ill_posed")

Verdicts = dict[int, tuple[str, str]]
"""Position in the stage's input -> (rule, detail) for each row the stage drops."""


@dataclass
class Cleaning:
    kept: list[Row]
    rejected: list[tuple[Row, str, str]] = field(default_factory=list)
    rewritten: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    llm_filter: Counter = field(default_factory=Counter)
    """Math queries the LLM filter judged (`checked`) and could not judge (`unchecked`)."""
    progress: bool = False
    """Say each stage as it starts (stages that loop over rows here also show a bar)."""

    def run(self, stage: str, check: Callable[[list[Row]], Verdicts]) -> None:
        """Apply one stage to the rows still kept; its drops leave `kept` in input order."""
        start = time.perf_counter()
        if self.progress:
            tqdm.write(f"clean: {stage} on {len(self.kept)} rows", file=sys.stderr)
        verdicts = check(self.kept)
        self.rejected += [(self.kept[i], rule, detail) for i, (rule, detail) in sorted(verdicts.items())]
        self.kept = [r for i, r in enumerate(self.kept) if i not in verdicts]
        self.seconds[stage] = round(time.perf_counter() - start, 3)


def clean(rows: list[Row], cfg: PreprocessConfig, decontaminator: Decontaminator | None = None,
          progress: bool = False) -> Cleaning:
    done = Cleaning(list(rows), progress=progress)
    done.run("query_rules", lambda kept: query_rules(kept, cfg, done.rewritten, progress))
    if cfg.rules.exact_duplicate:
        done.run("exact_duplicate", exact_duplicates)
    if cfg.rules.near_duplicate:
        done.run("near_duplicate", lambda kept: near_duplicates(kept, cfg))
    if decontaminator is not None:
        d = cfg.decontamination
        if d.exact or d.ngram:
            done.run("contamination_text", lambda kept: contamination_text(kept, decontaminator, progress))
        if d.embedding:
            done.run("contamination_embedding", lambda kept: contamination_embedding(kept, decontaminator, progress))
    if cfg.llm_filter.endpoint:  # last: the one stage that costs a model call per row
        done.run("llm_filter", lambda kept: llm_filter(kept, cfg, done.llm_filter))
    return done


def rows_bar(rows: list[Row], stage: str, progress: bool) -> tqdm:
    return tqdm(rows, desc=stage, unit="row", disable=not progress, mininterval=2, file=sys.stderr)


def query_rules(rows: list[Row], cfg: PreprocessConfig, rewritten: Counter, progress: bool = False) -> Verdicts:
    """The per-query rules; multiple-choice math is rewritten in place (counted in `rewritten`)."""
    switches = cfg.rules
    any_source = [(n, f) for n, f in (("url", rules.url), ("image_reference", rules.image_reference))
                  if getattr(switches, n)]
    math_only = [(n, f) for n, f in (("proof", rules.proof), ("multi_subquestion", rules.multi_subquestion))
                 if getattr(switches, n)]
    verdicts: Verdicts = {}
    for i, row in enumerate(rows_bar(rows, "query_rules", progress)):
        is_math = row.source in cfg.math_sources
        query = row.query
        for name, check in any_source + (math_only if is_math else []):
            if detail := check(query):
                verdicts[i] = (name, detail)
                break
        if i in verdicts or not is_math:
            continue
        if switches.multiple_choice:
            choice = rewrite_multiple_choice(row.last_turn, row.data.get("answer"))
            if choice.status == "unresolved":
                verdicts[i] = ("multiple_choice_unresolved", choice.detail)
                continue
            if choice.status == "rewritten":
                row.set_last_turn(choice.query)
                row.data["answer_original"] = row.data.get("answer")
                row.data["answer"] = choice.answer
                rewritten["multiple_choice"] += 1
        if switches.no_answer and (detail := rules.no_answer(row.data.get("answer"))):
            verdicts[i] = ("no_answer", detail)
    return verdicts


def exact_duplicates(rows: list[Row]) -> Verdicts:
    return {i: ("exact_duplicate", f"same query as id {rows[j].id}")
            for i, j in dedup.exact_duplicates([r.query for r in rows]).items()}


def near_duplicates(rows: list[Row], cfg: PreprocessConfig) -> Verdicts:
    found = dedup.near_duplicates([r.query for r in rows], cfg.near_duplicates)
    return {i: ("near_duplicate", f"Jaccard ~{score:.2f} with id {rows[j].id}") for i, (j, score) in found.items()}


def contamination_text(rows: list[Row], decontaminator: Decontaminator, progress: bool = False) -> Verdicts:
    d = decontaminator.cfg
    verdicts: Verdicts = {}
    for i, row in enumerate(rows_bar(rows, "contamination_text", progress)):
        if d.exact and (detail := decontaminator.exact(row.query)):
            verdicts[i] = ("contaminated_exact", detail)
        elif d.ngram and (detail := decontaminator.ngram(row.query)):
            verdicts[i] = ("contaminated_ngram", detail)
    return verdicts


def contamination_embedding(rows: list[Row], decontaminator: Decontaminator, progress: bool = False,
                            chunk: int = 1024) -> Verdicts:
    """Embedding matches, `chunk` rows per call so the bar moves (a row's decision never depends
    on the other rows of a call, so chunking changes nothing)."""
    verdicts: Verdicts = {}
    with tqdm(total=len(rows), desc="contamination_embedding", unit="row", disable=not progress,
              mininterval=2, file=sys.stderr) as bar:
        for start in range(0, len(rows), chunk):
            part = [r.query for r in rows[start:start + chunk]]
            verdicts.update({start + i: ("contaminated_embedding", detail)
                             for i, detail in decontaminator.semantic(part).items()})
            bar.update(len(part))
    return verdicts


def llm_filter(rows: list[Row], cfg: PreprocessConfig, counts: Counter) -> Verdicts:
    """Math queries the served LLM judges ill posed; the ones it could not judge stay, marked."""
    math = [i for i, r in enumerate(rows) if r.source in cfg.math_sources]
    verdicts: Verdicts = {}
    for i, (bad, detail) in zip(math, rules.ill_posed([rows[i].query for i in math], cfg.llm_filter)):
        if bad is None:
            rows[i].data.update(llm_filter="unchecked", llm_filter_error=detail)
            counts["unchecked"] += 1
            continue
        counts["checked"] += 1
        if bad:
            verdicts[i] = ("ill_posed", detail or "judged ill posed")
    return verdicts


def enabled_rules(cfg: PreprocessConfig, decontaminate: bool) -> list[str]:
    on = {name for name in RULES if getattr(cfg.rules, name, False)}
    if cfg.rules.multiple_choice:
        on.add("multiple_choice_unresolved")
    if decontaminate:
        on |= {f"contaminated_{k}" for k in ("exact", "ngram", "embedding") if getattr(cfg.decontamination, k)}
    if cfg.llm_filter.endpoint:
        on.add("ill_posed")
    return [name for name in RULES if name in on]


def main(argv: list[str] | None = None) -> dict:
    p = parser("Clean training queries: rules, deduplication, decontamination (AM-Thinking-v1 2.1).")
    p.add_argument("--decontaminate", nargs="+", default=[], metavar="EVAL",
                   help="eval files (JSONL/JSON/Parquet with `prompt`, `problem` or `question`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stages and rows) on stderr")
    args = p.parse_args(argv)
    cfg = config(args)
    start = time.perf_counter()
    rows = read_rows(args.input)
    read_s = time.perf_counter() - start
    decontaminator = None
    index_s = time.perf_counter()
    if args.decontaminate:
        decontaminator = Decontaminator(load_eval_queries(args.decontaminate), cfg.decontamination)
    index_s = time.perf_counter() - index_s
    done = clean(rows, cfg, decontaminator, progress=not args.no_progress)
    kept = [r.data for r in done.kept]
    report: dict = {
        "input": args.input, "output": args.output,
        "rows_in": len(rows), "rows_out": len(kept), "rows_rejected": len(done.rejected),
        "rows_rewritten": sum(done.rewritten.values()),
    }
    counts = Counter(rule for _, rule, _ in done.rejected)
    report["rejected_by_rule"] = {name: counts.get(name, 0) for name in enabled_rules(cfg, bool(args.decontaminate))}
    report["rewritten"] = dict(done.rewritten)
    report["kept_by_source"] = category_counts(kept, "source")
    if args.decontaminate:
        report["eval_queries"] = dict(Counter(e.file for e in decontaminator.evals))
    if cfg.llm_filter.endpoint:
        report["llm_filter"] = {"endpoint": cfg.llm_filter.endpoint, "checked": done.llm_filter["checked"],
                                "ill_posed": counts.get("ill_posed", 0), "unchecked": done.llm_filter["unchecked"]}
    if cfg.mixing.weights or cfg.mixing.min_fraction:
        kept = mix(kept, cfg.mixing)
        report["rows_out"] = len(kept)
        report["mixed_by_category"] = category_counts(kept, cfg.mixing.category_field)
    write_s = time.perf_counter()
    write_records(args.output, kept)
    write_rejects(args.rejects, [(r.data, rule, detail) for r, rule, detail in sorted(done.rejected, key=lambda x: x[0].number)])
    report["seconds"] = {"read": round(read_s, 3), "eval_index": round(index_s, 3), **done.seconds,
                         "write": round(time.perf_counter() - write_s, 3), "total": round(time.perf_counter() - start, 3)}
    write_report(args.report, report)
    return report


if __name__ == "__main__":
    raise SystemExit(run(main))
