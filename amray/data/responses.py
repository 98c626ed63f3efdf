"""Filter synthetic SFT responses: structure, n-gram repetition, perplexity (AM-Thinking-v1 2.1).

    python -m amray.data.responses --input IN --output OUT --report REPORT [--rejects REJECTS] \\
        [responses.model=DIR responses.max_perplexity=20 ...]

Rows: `id`, and either `messages` ending in the assistant response or `prompt` + `response`;
`source` picks which answers need a `\\boxed{}`, and `finish_reason: "length"` marks a cut response.
The cheap rules run first; perplexity (when `responses.model` is set) only on what is left.
"""

from __future__ import annotations

import time
from collections import Counter

from amray.data.cli import config, parser, run, write_rejects, write_report
from amray.data.config import ResponseFilterConfig
from amray.data.records import DataError, read_records, write_records
from amray.rewards.math import last_boxed

RULES = ("truncated", "structure", "repetition", "perplexity")


def split_row(record: dict, where: str) -> tuple[list[dict], str]:
    """(prompt messages, response) of an SFT row."""
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant" or not isinstance(last.get("content"), str):
            raise DataError(f"{where}: field `messages` must end with an assistant message with text `content`")
        return messages[:-1], last["content"]
    prompt, response = record.get("prompt"), record.get("response")
    if not isinstance(response, str):
        raise DataError(f"{where}: field `response` is missing (or give `messages` ending in the assistant turn)")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}], response
    if isinstance(prompt, list):
        return prompt, response
    raise DataError(f"{where}: field `prompt` must be text or a message list")


def repetition_ratio(text: str, n: int) -> float:
    """Share of the word n-grams that repeat an earlier one (0 for text shorter than n words)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def structure(response: str, source: str | None, finish_reason: str | None,
              cfg: ResponseFilterConfig) -> tuple[str, str] | None:
    """(rule, detail) when the response is cut off or lacks reasoning or a final answer."""
    if finish_reason == "length":
        return "truncated", "finish_reason is `length`"
    answer = response
    if cfg.require_reasoning:
        opened, closed = response.find(cfg.think_open), response.rfind(cfg.think_close)
        if closed < 0:
            return ("truncated", f"{cfg.think_open} never closed") if opened >= 0 else \
                ("structure", f"no {cfg.think_open}...{cfg.think_close} reasoning")
        reasoning = response[opened + len(cfg.think_open) if opened >= 0 else 0:closed]
        if not reasoning.strip():
            return "structure", "the reasoning is empty"
        answer = response[closed + len(cfg.think_close):]
    if not answer.strip():
        return "structure", "no final answer after the reasoning"
    if answer.count("```") % 2:
        return "truncated", "a code block is never closed"
    if source in cfg.require_boxed_sources and last_boxed(answer) is None:
        return "structure", f"no \\boxed{{}} answer (required for source {source!r})"
    return None


def filter_responses(records: list[dict], cfg: ResponseFilterConfig,
                     where: str = "input") -> tuple[list[dict], list[tuple[dict, str, str]], dict]:
    """Kept rows, (row, rule, detail) of the dropped ones, and per-stage seconds."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    survivors, rejected = [], []
    for number, record in enumerate(records, start=1):
        if record.get("id") is None:
            raise DataError(f"row {number} of {where}: field `id` is missing")
        prompt, response = split_row(record, f"row {number} of {where}")
        verdict = structure(response, record.get("source"), record.get("finish_reason"), cfg)
        ratio = repetition_ratio(response, cfg.ngram_size) if verdict is None else 0.0
        if verdict is None and ratio > cfg.max_repetition:
            verdict = ("repetition", f"{ratio:.2f} of the {cfg.ngram_size}-grams repeat (max {cfg.max_repetition})")
        if verdict is None:
            survivors.append((record, prompt, response))
        else:
            rejected.append((record, *verdict))
    seconds["structure_and_repetition"] = round(time.perf_counter() - start, 3)
    kept = [r for r, _, _ in survivors]
    if cfg.model and survivors:
        from amray.data.perplexity import PerplexityScorer

        start = time.perf_counter()
        scorer = PerplexityScorer(cfg.model, cfg.max_tokens, cfg.batch_size, cfg.device)
        ppl = scorer.score([p for _, p, _ in survivors], [r for _, _, r in survivors])
        kept = []
        for (record, _, _), value in zip(survivors, ppl):
            if value > cfg.max_perplexity:
                rejected.append((record, "perplexity", f"perplexity {value:.1f} > {cfg.max_perplexity}"))
            else:
                kept.append(record)
        seconds["perplexity"] = round(time.perf_counter() - start, 3)
    return kept, rejected, seconds


def main(argv: list[str] | None = None) -> dict:
    p = parser("Filter synthetic SFT responses by structure, n-gram repetition and perplexity.")
    args = p.parse_args(argv)
    cfg = config(args).responses
    records = read_records(args.input)
    kept, rejected, seconds = filter_responses(records, cfg, args.input)
    order = {id(r): i for i, r in enumerate(records)}
    write_records(args.output, kept)
    write_rejects(args.rejects, sorted(rejected, key=lambda r: order[id(r[0])]))
    counts = Counter(rule for _, rule, _ in rejected)
    active = [r for r in RULES if r != "perplexity" or cfg.model]
    report = {"input": args.input, "output": args.output, "rows_in": len(records), "rows_out": len(kept),
              "rows_rejected": len(rejected), "rejected_by_rule": {r: counts.get(r, 0) for r in active},
              "perplexity_model": cfg.model or None, "seconds": seconds}
    write_report(args.report, report)
    return report


if __name__ == "__main__":
    raise SystemExit(run(main))
