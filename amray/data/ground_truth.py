"""Check math ground truths against reference-model answers, and correct them as the paper does.

    python -m amray.data.ground_truth --input IN --references REFS [--judge JUDGE] \\
        --output OUT --report REPORT [--rejects REJECTS] [ground_truth.correct=true ...]

AM-Thinking-v1 (section 2.1): reference responses are compared with the ground truth by
math-verify; where the references' majority answer disagrees, a second judge (o4-mini in the paper)
answers the query, and if math-verify finds its answer equivalent to the majority's, the judge's
answer replaces the ground truth. Each reference's last `\\boxed{}` is compared exactly as the math
reward does (`amray.rewards.math.score_math`).

REFS rows: `id` and `responses` (a list) or `response` (one per row, ids may repeat). To sample them
with the rollout engines: `python jobs/pass_rate.py --input IN --samples K --responses REFS ...`.
The second judge is served (`ground_truth.judge.endpoint=URL`: only the disputed rows are sent, a
row whose judge fails or gives no boxed answer is kept as `unchecked` with `judge_error`), or its
answers come from a file: JUDGE rows with `id` and `response` (its last box is used) or `answer`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from amray.data.answers import answer_text
from amray.data.cli import config, parser, run, write_rejects, write_report
from amray.data.config import GroundTruthConfig
from amray.configtree import ConfigError
from amray.data.records import DataError, read_records, write_records
from amray.data.rows import Row, read_rows
from amray.endpoint import EndpointClient, EndpointError
from amray.prompts import MATH_INSTRUCTION
from amray.rewards.math import last_boxed, score_math

STATUSES = ("agrees", "disagrees", "corrected", "no_majority", "no_references", "unchecked")
"""`unchecked`: the majority disputes the answer but the served judge could not answer (kept)."""


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


def reference_check(answer: str, responses: list[str], cfg: GroundTruthConfig) -> Check:
    """agrees / disagrees / no_majority / no_references: the references' majority against `answer`."""
    if not responses:
        return Check("no_references")
    correct = sum(score_math(r, answer, timeout_s=cfg.timeout_s).reward == 1.0 for r in responses)
    majority, _ = majority_answer([last_boxed(r) for r in responses], cfg)
    if majority is None:
        return Check("no_majority", None, correct, len(responses))
    if equivalent(majority, answer, cfg):
        return Check("agrees", majority, correct, len(responses))
    return Check("disagrees", majority, correct, len(responses))


def apply_judge(check: Check, judge: str | None, cfg: GroundTruthConfig) -> Check:
    """A disputed answer is corrected to the judge's when the judge agrees with the majority."""
    if check.status == "disagrees" and cfg.correct and judge is not None and equivalent(judge, check.majority, cfg):
        return Check("corrected", check.majority, check.references_correct, check.references)
    return check


def ask_judge(rows: list[Row], cfg: GroundTruthConfig) -> dict[str, tuple[str | None, str]]:
    """The served judge's answer to each row's query: id -> (last boxed answer, "") or (None, why not)."""
    template = cfg.judge_prompt or "{query}\n\n" + MATH_INSTRUCTION.replace("{", "{{").replace("}", "}}")
    try:
        client = EndpointClient(cfg.judge, "ground_truth.judge")
    except EndpointError as e:  # e.g. the API key's variable is not set: the run's setting, named
        raise ConfigError(str(e)) from None
    with client:
        def one(row: Row) -> tuple[str | None, str]:
            try:
                reply = client.chat([{"role": "user", "content": template.format(query=row.last_turn)}])
            except EndpointError as e:
                return None, str(e)
            answer = last_boxed(reply.text)
            if answer is None:
                cut = " (cut at ground_truth.judge.max_tokens)" if reply.finish_reason == "length" else ""
                return None, f"{client.name}: no \\boxed{{}} answer{cut}: {reply.text[-200:]!r}"
            return answer, ""

        return dict(zip([r.id for r in rows], client.map(one, rows)))


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
               math_sources: list[str], cfg: GroundTruthConfig
               ) -> tuple[list[dict], list[tuple[dict, str, str]], Counter]:
    """Rows with `answer_check` (and corrected answers), the dropped ones, and the counts. With
    `ground_truth.judge.endpoint` set, the disputed rows' judge answers are asked for here."""
    checks: dict[int, tuple[str, Check]] = {}
    counts: Counter = Counter()
    for i, row in enumerate(rows):
        if row.source not in math_sources:
            continue
        answer = answer_text(row.data.get("answer"))
        if not answer:
            raise DataError(f"row {row.number} (id {row.id}): field `answer` is missing; clean the file first")
        checks[i] = (answer, reference_check(answer, refs.get(row.id, []), cfg))
    served: dict[str, tuple[str | None, str]] = {}
    if cfg.judge.endpoint:
        disputed = [rows[i] for i, (_, c) in checks.items() if c.status == "disagrees"]
        served = ask_judge(disputed, cfg) if disputed else {}
        judged = {**judged, **{rid: answer for rid, (answer, _) in served.items()}}
    kept, rejected = [], []
    for i, row in enumerate(rows):
        data = row.data
        if i not in checks:
            counts["not_math"] += 1
            kept.append(data)
            continue
        answer, check = checks[i]
        judge_answer, judge_error = judged.get(row.id), served.get(row.id, (None, ""))[1]
        check = apply_judge(check, judge_answer, cfg)
        if judge_error:
            check = Check("unchecked", check.majority, check.references_correct, check.references)
            data["judge_error"] = judge_error
            counts["judge_failed"] += 1
        elif row.id in served:
            counts["judge_agrees" if equivalent(judge_answer, check.majority, cfg) else "judge_disagrees"] += 1
        counts[check.status] += 1
        counts["references"] += check.references
        counts["references_correct"] += check.references_correct
        data["answer_check"] = check.status
        if check.majority is not None and check.status != "agrees":
            data["reference_majority"] = check.majority
        if judge_answer is not None and check.status != "agrees":
            data["judge_answer"] = judge_answer
        if check.status == "corrected":  # the paper revises the ground truth to the judge's answer
            data["answer_original"], data["answer"] = data["answer"], judge_answer
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
    served = cfg.ground_truth.judge.endpoint
    if args.judge and served:
        raise DataError("give the second judge's answers as --judge FILE or serve it (ground_truth.judge.endpoint), not both")
    judged = load_judge(args.judge) if args.judge else {}
    if cfg.ground_truth.correct and not (args.judge or served):
        print("warning: ground_truth.correct=true without a judge (--judge or ground_truth.judge.endpoint): "
              "nothing can be corrected")
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
    if served:
        report["judge"] = {"endpoint": served, "asked": sum(counts[k] for k in ("judge_agrees", "judge_disagrees",
                                                                                "judge_failed")),
                           "agrees_with_majority": counts["judge_agrees"],
                           "disagrees_with_majority": counts["judge_disagrees"], "failed": counts["judge_failed"]}
    write_report(args.report, report)
    return report


if __name__ == "__main__":
    raise SystemExit(run(main))
