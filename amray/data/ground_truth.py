"""Check math ground truths against reference-model answers, and correct them as the paper does.

    python -m amray.data.ground_truth --input IN --references REFS [--judge JUDGE] \\
        --output OUT --report REPORT [--rejects REJECTS] [ground_truth.correct=true ...]

AM-Thinking-v1 (section 2.1): reference responses are compared with the ground truth by
math-verify; where the references' majority answer disagrees, a second judge answers the query, and
if it agrees with the majority the majority's answer replaces the ground truth. Each reference's last
`\\boxed{}` is compared exactly as the math reward does (`amray.rewards.math.score_math`).

REFS rows: `id` and `responses` (a list) or `response` (one per row, ids may repeat). To sample them
with the rollout engines: `python jobs/pass_rate.py --input IN --samples K --responses REFS ...`.
JUDGE rows: `id` and `response` (its last box is used) or `answer`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from amray.data.answers import answer_text
from amray.data.cli import config, parser, run, write_rejects, write_report
from amray.data.config import GroundTruthConfig
from amray.data.records import DataError, read_records, write_records
from amray.data.rows import Row, read_rows
from amray.rewards.math import last_boxed, score_math

STATUSES = ("agrees", "disagrees", "corrected", "no_majority", "no_references")


@dataclass
class Check:
    status: str
    """One of STATUSES."""
    majority: str | None = None
    """The references' majority answer (when there is one)."""
    references_correct: int = 0
    references: int = 0


def equivalent(a: str, b: str, cfg: GroundTruthConfig) -> bool:
    """Two answers match when the reward would give `\\boxed{a}` full marks against `b`."""
    if " ".join(a.split()) == " ".join(b.split()):
        return True
    return score_math("\\boxed{" + a + "}", b, timeout_s=cfg.timeout_s).reward == 1.0


def majority_answer(answers: list[str | None], cfg: GroundTruthConfig) -> tuple[str | None, int]:
    """The most common answer (math-verify equivalence classes) and its count; None if not a majority."""
    clusters: list[list[str]] = []
    for a in answers:
        if a is None:
            continue  # a response without a box votes for nothing, but still counts in the total
        home = next((c for c in clusters if equivalent(a, c[0], cfg)), None)
        if home is None:
            clusters.append([a])
        else:
            home.append(a)
    top = max(clusters, key=len, default=[])
    if not answers or len(top) / len(answers) <= cfg.majority:
        return None, len(top)
    return Counter(top).most_common(1)[0][0], len(top)


def check_answer(answer: str, responses: list[str], judge: str | None, cfg: GroundTruthConfig) -> Check:
    if not responses:
        return Check("no_references")
    correct = sum(score_math(r, answer, timeout_s=cfg.timeout_s).reward == 1.0 for r in responses)
    majority, _ = majority_answer([last_boxed(r) for r in responses], cfg)
    if majority is None:
        return Check("no_majority", None, correct, len(responses))
    if equivalent(majority, answer, cfg):
        return Check("agrees", majority, correct, len(responses))
    if cfg.correct and judge is not None and equivalent(judge, majority, cfg):
        return Check("corrected", majority, correct, len(responses))
    return Check("disagrees", majority, correct, len(responses))


def load_references(path: str) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = defaultdict(list)
    for number, record in enumerate(read_records(path), start=1):
        if record.get("id") is None:
            raise DataError(f"row {number} of {path}: field `id` is missing")
        responses = record.get("responses", [record["response"]] if "response" in record else None)
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise DataError(f"row {number} of {path}: needs `responses` (a list of strings) or `response`")
        refs[str(record["id"])] += responses
    return refs


def load_judge(path: str) -> dict[str, str | None]:
    judged: dict[str, str | None] = {}
    for number, record in enumerate(read_records(path), start=1):
        if record.get("id") is None:
            raise DataError(f"row {number} of {path}: field `id` is missing")
        if isinstance(record.get("response"), str):
            judged[str(record["id"])] = last_boxed(record["response"])
        elif record.get("answer") is not None:
            judged[str(record["id"])] = answer_text(record["answer"])
        else:
            raise DataError(f"row {number} of {path}: needs `response` (text) or `answer`")
    return judged


def check_rows(rows: list[Row], refs: dict[str, list[str]], judged: dict[str, str | None],
               math_sources: list[str], cfg: GroundTruthConfig) -> tuple[list[dict], list[tuple[dict, str, str]], dict]:
    """Rows with `answer_check` (and corrected answers), the dropped ones, and the counts."""
    kept, rejected = [], []
    counts: Counter = Counter()
    for row in rows:
        data = row.data
        if row.source not in math_sources:
            counts["not_math"] += 1
            kept.append(data)
            continue
        answer = answer_text(data.get("answer"))
        if not answer:
            raise DataError(f"row {row.number} (id {row.id}): field `answer` is missing; clean the file first")
        check = check_answer(answer, refs.get(row.id, []), judged.get(row.id), cfg)
        counts[check.status] += 1
        counts["references"] += check.references
        counts["references_correct"] += check.references_correct
        data["answer_check"] = check.status
        if check.majority is not None and check.status != "agrees":
            data["reference_majority"] = check.majority
        if check.status == "corrected":
            data["answer_original"], data["answer"] = data["answer"], check.majority
        if check.status == "disagrees" and cfg.drop_disagreeing:
            rejected.append((data, "answer_disagrees_with_references",
                             f"majority answer {check.majority!r} vs answer {answer!r}"))
        else:
            kept.append(data)
    return kept, rejected, counts


def main(argv: list[str] | None = None) -> dict:
    p = parser("Check math answers against reference responses (math-verify), flag and correct them.")
    p.add_argument("--references", required=True, help="reference responses: `id` + `responses` or `response`")
    p.add_argument("--judge", default=None, help="second judge: `id` + `response` or `answer`")
    args = p.parse_args(argv)
    cfg = config(args)
    rows = read_rows(args.input)
    refs = load_references(args.references)
    judged = load_judge(args.judge) if args.judge else {}
    if cfg.ground_truth.correct and not args.judge:
        print("warning: ground_truth.correct=true without --judge: nothing can be corrected")
    kept, rejected, counts = check_rows(rows, refs, judged, cfg.math_sources, cfg.ground_truth)
    ids = {r.id for r in rows}
    write_records(args.output, kept)
    write_rejects(args.rejects, rejected)
    report = {
        "input": args.input, "output": args.output, "rows_in": len(rows), "rows_out": len(kept),
        "rows_rejected": len(rejected),
        "answer_check": {s: counts.get(s, 0) for s in STATUSES},
        "not_math": counts["not_math"],
        "references": counts["references"], "references_correct": counts["references_correct"],
        "references_without_row": sum(1 for i in refs if i not in ids),
    }
    write_report(args.report, report)
    return report


if __name__ == "__main__":
    raise SystemExit(run(main))
