"""The benchmark registry: where each benchmark's problems come from, how they are asked, and
which reward source scores them.

Adding a benchmark is one `Benchmark` entry: its file, its reward source, and a loader that turns a
file row into the user prompt plus the fields that source needs (math: `answer`; code: `language`,
`tests`; ifeval: `instruction_id_list`, `kwargs`). Loaders check every row before anything is
generated: a malformed row stops the run with a message naming the file, the row and the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amray.evaluation.config import BenchConfig
from amray.prompts import MATH_INSTRUCTION
from amray.rewards import require
from amray.rewards.code import TestsError, livecodebench_tests, parse_tests

ID_FIELDS = ("id", "idx", "unique_id", "task_id", "question_id", "key")
"""A file's own problem id, first found wins; rows without one are numbered from 0."""

MATH_PROMPT = "{problem}\n" + MATH_INSTRUCTION.replace("{", "{{").replace("}", "}}")
# evalplus's instruction for chat models on HumanEval(+)
HUMANEVAL_PROMPT = ("Please provide a self-contained Python script that solves the following problem "
                    "in a markdown code block:\n```python\n{problem}\n```")
# the usual MBPP wording (task + its tests), asking for the fenced block the code reward reads
MBPP_PROMPT = ("You are an expert Python programmer, and here is your task: {problem} "
               "Your code should pass these tests:\n\n{tests}\n\n"
               "Write your solution in a single markdown code block:\n```python\n# YOUR CODE HERE\n```")
# LiveCodeBench's own prompt (identical to the QwQ release's `qwq_prompt` for all 279 v5 problems)
LCB_PROMPT = ("You will be given a question (problem specification) and will generate a correct Python "
              "program that matches the specification and passes all tests.\n\nQuestion: {problem}\n\n{format}")
LCB_STDIN_FORMAT = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not "
                    "directly test on the sample inputs). Enclose your code within delimiters as follows. "
                    "Ensure that when the python program runs, it reads the inputs, runs the algorithm and "
                    "writes output to STDOUT.\n```python\n# YOUR CODE HERE\n```\n\n")
LCB_STARTER_FORMAT = ("You will use the following starter code to write the solution to the problem and "
                      "enclose your code within delimiters.\n```python\n{starter_code}\n```\n\n")


class BenchmarkError(ValueError):
    """Unknown benchmark, missing data file or malformed row: raised before any generation."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    file: str
    """File name inside the data directory (.jsonl, or .json holding a list)."""
    source: str
    """Reward source that scores it (amray.rewards)."""
    load: Callable[[dict, BenchConfig], dict | None]
    """File row -> {"prompt": user turn, **reward fields}, or None to leave the row out (splits)."""


@dataclass
class Problem:
    benchmark: str
    problem_id: str | int
    row: dict
    """What the rollout and reward see: `id`, `source`, `prompt` (the user turn), ground truth."""


def need(row: dict, name: str, types: type | tuple[type, ...] = str) -> object:
    """A benchmark file's field: present, of `types`, not blank (the caller adds the file and row)."""
    return require(row, name, types, nonempty=True)


def math_loader(problem_field: str, strip_suffix: str = "") -> Callable[[dict, BenchConfig], dict]:
    def load(row: dict, _: BenchConfig) -> dict:
        problem = str(need(row, problem_field)).strip()
        if strip_suffix and problem.endswith(strip_suffix):  # AIME 2025's prompt carries the instruction
            problem = problem[: -len(strip_suffix)].rstrip()
        return {"prompt": MATH_PROMPT.format(problem=problem), "answer": need(row, "answer", (str, int, float))}
    return load


def gsm8k(row: dict, _: BenchConfig) -> dict:
    solution = str(need(row, "answer"))
    if "####" not in solution:
        raise ValueError("field `answer` has no '#### <number>' final answer")
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")  # "2,125": a thousands separator
    if not answer:
        raise ValueError("field `answer` has nothing after '####'")
    return {"prompt": MATH_PROMPT.format(problem=str(need(row, "question")).strip()), "answer": answer}


def livecodebench(row: dict, cfg: BenchConfig) -> dict | None:
    window = cfg.livecodebench
    if window.date_from or window.date_to:
        date = str(need(row, "contest_date"))[:10]
        if (window.date_from and date < window.date_from) or (window.date_to and date > window.date_to):
            return None
    starter = row.get("starter_code") or ""
    tests = need(row, "tests", (list, str))
    tests = json.loads(tests) if isinstance(tests, str) else tests
    fmt = LCB_STARTER_FORMAT.format(starter_code=starter) if starter else LCB_STDIN_FORMAT
    return {"prompt": LCB_PROMPT.format(problem=need(row, "problem"), format=fmt),
            "language": "python", "tests": livecodebench_tests(tests, starter)}


def humaneval(row: dict, _: BenchConfig) -> dict:
    tests = f"{need(row, 'test')}\ncheck({need(row, 'entry_point')})\n"
    return {"prompt": HUMANEVAL_PROMPT.format(problem=str(need(row, "prompt")).strip()),
            "language": "python", "tests": {"asserts": tests}}


def mbpp(row: dict, _: BenchConfig) -> dict | None:
    if not 11 <= need(row, "task_id", int) <= 510:  # the usual test split: task ids 11-510
        return None
    test_list = need(row, "test_list", list)
    setup = row.get("test_setup_code") or ""
    return {"prompt": MBPP_PROMPT.format(problem=need(row, "text"), tests="\n".join(test_list)),
            "language": "python", "tests": {"asserts": f"{setup}\n" + "\n".join(test_list)}}


def ifeval(row: dict, _: BenchConfig) -> dict:
    ids, kwargs = need(row, "instruction_id_list", list), need(row, "kwargs", list)
    if len(ids) != len(kwargs) or not all(isinstance(i, str) for i in ids) or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError("`instruction_id_list` (strings) and `kwargs` (objects) must be lists of the same length")
    return {"prompt": need(row, "prompt"), "instruction_id_list": ids, "kwargs": kwargs}


REGISTRY: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("aime2024", "aime2024.jsonl", "math", math_loader("problem")),
    Benchmark("aime2025", "aime2025.jsonl", "math", math_loader("prompt", strip_suffix=MATH_INSTRUCTION)),
    Benchmark("amc2023", "amc2023.jsonl", "math", math_loader("problem")),
    Benchmark("math500", "math500.jsonl", "math", math_loader("problem")),
    Benchmark("gsm8k", "gsm8k_test.jsonl", "math", gsm8k),
    Benchmark("livecodebench", "livecodebench_v5_public_joined.jsonl", "code", livecodebench),
    Benchmark("humaneval", "humaneval.jsonl", "code", humaneval),
    Benchmark("mbpp", "mbpp.jsonl", "code", mbpp),
    Benchmark("ifeval", "ifeval_input_data.jsonl", "ifeval", ifeval),
]}


PAIRWISE: dict[str, str] = {
    "arena_hard": "the model's answers against a baseline's, judged pairwise by a served judge: a win rate "
                  "(amray/evaluation/arena_hard.py; files and judge in bench.arena_hard)",
}
"""Benchmarks scored by a judge comparing answers, not by a reward: `jobs/evaluate.py` runs them
beside the REGISTRY's (their result is a win rate, not pass@1)."""


def split_names(text: str | list[str]) -> tuple[list[str], list[str]]:
    """`math500,arena_hard` -> (REGISTRY names, PAIRWISE names), each checked (an unknown one is named)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    known = [*REGISTRY, *PAIRWISE]
    if not names:
        raise BenchmarkError(f"no benchmark given (known: {', '.join(known)})")
    for name in names:
        if name not in known:
            raise BenchmarkError(f"unknown benchmark {name!r} (known: {', '.join(known)})")
    names = list(dict.fromkeys(names))
    return [n for n in names if n in REGISTRY], [n for n in names if n in PAIRWISE]


def parse_names(text: str | list[str]) -> list[str]:
    """`aime2024,gsm8k` -> names, each checked against the registry (an unknown one is named)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise BenchmarkError(f"no benchmark given (known: {', '.join(REGISTRY)})")
    for name in names:
        if name not in REGISTRY:
            raise BenchmarkError(f"unknown benchmark {name!r} (known: {', '.join(REGISTRY)})")
    return list(dict.fromkeys(names))


def load_benchmark(name: str, data_dir: str | Path, cfg: BenchConfig | None = None, limit: int = 0) -> list[Problem]:
    """Every problem of one benchmark (the first `limit` when > 0), each row checked."""
    if name not in REGISTRY:
        raise BenchmarkError(f"unknown benchmark {name!r} (known: {', '.join(REGISTRY)})")
    bench, cfg = REGISTRY[name], cfg or BenchConfig()
    path = Path(data_dir) / bench.file
    if not path.is_file():
        raise BenchmarkError(f"benchmark {name}: data file {path} not found (--data-dir must hold {bench.file})")
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, raw in enumerate(read_file(path)):
        where = f"benchmark {name}: {bench.file} row {index}"
        try:
            fields = bench.load(raw, cfg)
            if fields is not None and bench.source == "code":
                parse_tests(fields["tests"], fields["language"])  # the reward's own shape check
        except KeyError as e:  # a nested field (e.g. a LiveCodeBench test without `output`)
            raise BenchmarkError(f"{where}: key {e} is missing") from None
        except (TypeError, ValueError, TestsError) as e:
            raise BenchmarkError(f"{where}: {e}") from None
        if fields is None:
            continue
        problem_id = next((raw[k] for k in ID_FIELDS if raw.get(k) is not None), index)
        if str(problem_id) in seen:
            raise BenchmarkError(f"{where}: problem id {problem_id!r} appears twice")
        seen.add(str(problem_id))
        row = {"id": f"{name}/{problem_id}", "source": bench.source, **fields}
        problems.append(Problem(name, problem_id, row))
        if limit and len(problems) == limit:
            break
    if not problems:
        raise BenchmarkError(f"benchmark {name}: no problems in {path} (check the file and bench.{name} settings)")
    return problems


def read_file(path: Path) -> list[dict]:
    """The rows of a benchmark (or responses) file (amray.data.records), errors as BenchmarkError."""
    from amray.data.records import DataError, read_records

    try:
        return read_records(path)
    except DataError as e:
        raise BenchmarkError(str(e)) from None
