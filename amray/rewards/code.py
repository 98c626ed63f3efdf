"""Code reward: the last fenced block of the row's language, run in the sandbox against the tests.

Test styles (`row["tests"]`, exactly one key):
  {"stdin_stdout": [{"input": "...", "output": "..."}]}  compared like LiveCodeBench, on the host
  {"functional": {"fn_name": "f", "cases": [{"args": [...], "expected": ...}]}}  Python only
  {"asserts": "assert f(1) == 2\\n..."}  Python only
Call-based tests (the last two) are judged in a sandbox of their own, apart from the solution's
(see code_calls); the host only compares stdin/stdout output, at most `output_bytes` of it.
Reward 1 only when every test passes; tests stop at the first failure, as in LiveCodeBench.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from decimal import Decimal, InvalidOperation

from amray.rewards.code_calls import SolutionLoadError, run_asserts, run_functional
from amray.rewards.config import RewardConfig
from amray.rewards.sandbox import Sandbox, SandboxError
from amray.rewards.sandbox_harness import PRELUDE
from amray.rewards.types import RewardResult

LANGUAGES = {"python": ("python", "py", "python3"), "cpp": ("cpp", "c++", "cc", "cxx")}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)


class TestsError(ValueError):
    """The row's `tests` field is malformed (the dataset's fault, not the model's)."""


def extract_code(response: str, language: str) -> str | None:
    """The last closed ```lang block of `language` (aliases: py, python3, c++, cc, ...)."""
    tags = LANGUAGES[language]
    blocks = [m.group(2) for m in _FENCE.finditer(response) if m.group(1).lower() in tags]
    return blocks[-1] if blocks else None


def parse_tests(tests: dict | str, language: str) -> tuple[str, object]:
    """(style, spec) after checking the shape; raises TestsError naming what is wrong."""
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError as e:
            raise TestsError(f"field `tests` is a string but not JSON: {e}") from None
    if not isinstance(tests, dict) or len(tests) != 1:
        raise TestsError("field `tests` must be an object with exactly one of stdin_stdout, functional, asserts")
    (style, spec), = tests.items()
    if style == "stdin_stdout":
        if not isinstance(spec, list) or not spec or not all(
                isinstance(c, dict) and isinstance(c.get("input"), str) and isinstance(c.get("output"), str) for c in spec):
            raise TestsError("tests.stdin_stdout must be a non-empty list of {input: str, output: str}")
        return style, spec
    if language != "python":
        raise TestsError(f"tests.{style} is Python-only; {language} rows need stdin_stdout tests")
    if style == "functional":
        if not isinstance(spec, dict) or not isinstance(spec.get("fn_name"), str) or not isinstance(spec.get("cases"), list) \
                or not spec["cases"] or not all(isinstance(c, dict) and isinstance(c.get("args"), list) and "expected" in c
                                                for c in spec["cases"]):
            raise TestsError("tests.functional must be {fn_name: str, cases: [{args: [...], expected: ...}, ...]}")
        return style, spec
    if style == "asserts":
        if not isinstance(spec, str) or not spec.strip():
            raise TestsError("tests.asserts must be a non-empty string of Python code")
        try:
            ast.parse(spec)
        except (SyntaxError, RecursionError, MemoryError) as e:  # the last two: nested too deeply to parse
            raise TestsError(f"tests.asserts is not valid Python: {type(e).__name__}: {e}") from None
        return style, spec
    raise TestsError(f"unknown test style {style!r} (stdin_stdout, functional, asserts)")


def score_code(response: str, language: str, tests: dict | str, config: RewardConfig) -> RewardResult:
    """Run the program; reward 1 iff all tests pass. Bounded by config.timeout_s as a whole."""
    deadline = time.monotonic() + config.timeout_s
    if language not in LANGUAGES:
        return RewardResult.failed(f"field `language` must be one of {sorted(LANGUAGES)}, got {language!r}")
    try:
        style, spec = parse_tests(tests, language)
    except TestsError as e:
        return RewardResult.failed(str(e))
    info: dict = {"language": language, "style": style}
    code = extract_code(response, language)
    if code is None:
        return RewardResult(0.0, {**info, "verdict": "no_code_block"})
    if language == "python":
        try:
            ast.parse(code)
        except (SyntaxError, RecursionError, MemoryError) as e:  # the last two: nested too deeply to parse
            return RewardResult(0.0, {**info, "verdict": "syntax_error", "detail": f"{type(e).__name__}: {e}"})
    try:
        with Sandbox(config.sandbox, slot_wait_s=config.timeout_s) as box:
            results = _run_tests(box, code, language, style, spec, deadline, info)
    except SandboxError as e:
        return RewardResult.failed(str(e), **info)
    if results is None:  # compile error or load failure, already described in info
        return RewardResult(0.0, info)
    total = len(spec["cases"]) if style == "functional" else len(spec) if style == "stdin_stdout" else None
    passed = sum(r["passed"] for r in results)
    all_passed = bool(results) and all(r["passed"] for r in results) and (total is None or passed == total)
    info.update(verdict="accepted" if all_passed else _verdict(results), tests=results, passed=passed,
                total=total if total is not None else len(results))
    return RewardResult(1.0 if all_passed else 0.0, info)


def _run_tests(box: Sandbox, code: str, language: str, style: str, spec: object, deadline: float,
               info: dict) -> list[dict] | None:
    cfg = box.config
    if style == "stdin_stdout":
        program = code if "__future__" in code else PRELUDE + code  # future imports must come first
        argv = [cfg.python, "-I", box.write("solution.py", program)] if language == "python" \
            else _compile_cpp(box, code, deadline, info)
        if argv is None:
            return None
        return _run_stdin_cases(box, argv, spec, deadline)
    try:
        if style == "functional":
            return run_functional(box, code, spec, deadline)
        return run_asserts(box, code, spec, deadline)
    except SolutionLoadError as e:
        info.update(verdict="runtime_error", detail=str(e)[:1000])
        return None


def _compile_cpp(box: Sandbox, code: str, deadline: float, info: dict) -> list[str] | None:
    cfg = box.config
    source, out_dir = box.write("solution.cpp", code), box.writable_dir("bin")
    timeout = max(0.0, min(cfg.compile_timeout_s, deadline - time.monotonic()))
    result = box.run(["g++", *cfg.cpp_flags, source, "-o", f"{out_dir}/solution"], timeout_s=timeout,
                     cpu_s=max(1, math.ceil(timeout)), memory_mb=cfg.compile_memory_mb, writable=(out_dir,))
    box.kill_all()
    info["compile_s"] = result.elapsed_s
    if not result.ok:
        info.update(verdict="compile_error", detail=(result.failure() or "")[-1000:])
        return None
    return [f"{out_dir}/solution"]


def _run_stdin_cases(box: Sandbox, argv: list[str], cases: list[dict], deadline: float) -> list[dict]:
    results = []
    for i, case in enumerate(cases):
        timeout = min(box.config.test_timeout_s, deadline - time.monotonic())
        if timeout <= 0:
            results.append({"case": i, "passed": False, "error": "row time limit exceeded", "elapsed_s": 0.0})
            break
        run = box.run(argv, stdin=case["input"].encode(), timeout_s=timeout)
        box.kill_all()  # whatever the run left behind (daemons) dies before the next case
        entry: dict = {"case": i, "elapsed_s": run.elapsed_s}
        failure = run.failure()
        if failure is None and not same_output(run.stdout.decode(errors="replace"), case["output"]):
            failure = "wrong answer: got " + repr(run.stdout[:200].decode(errors="replace"))
        entry["passed"] = failure is None
        if failure:
            entry["error"] = failure
        results.append(entry)
        if failure:
            break
    return results


def same_output(got: str, expected: str) -> bool:
    """LiveCodeBench's stdin/stdout check: the same lines after stripping each; a line that differs
    as text may still match as a list of decimals ("1.50" == "1.5")."""
    got_lines = [line.strip() for line in got.strip().split("\n")]
    want_lines = [line.strip() for line in expected.strip().split("\n")]
    if len(got_lines) != len(want_lines):
        return False
    for a, b in zip(got_lines, want_lines):
        if a == b:
            continue
        try:
            if [Decimal(x) for x in a.split()] != [Decimal(x) for x in b.split()]:
                return False
        except (InvalidOperation, ValueError):
            return False
    return True


def _verdict(results: list[dict]) -> str:
    error = next((r.get("error", "") for r in results if not r["passed"]), "")
    if error.startswith("wrong answer") or error.startswith("AssertionError"):
        return "wrong_answer"
    if "time limit" in error:
        return "time_limit_exceeded"
    if "output limit" in error:
        return "output_limit_exceeded"
    return "runtime_error"


def livecodebench_tests(tests: list[dict], starter_code: str = "") -> dict:
    """LiveCodeBench's public tests ([{input, output, testtype}]) in this module's format: stdin
    cases as they are; functional cases read one JSON argument per input line, the name of the
    function from the starter code (`def name(self, ...)`)."""
    if all(t.get("testtype") == "stdin" for t in tests):
        return {"stdin_stdout": [{"input": t["input"], "output": t["output"]} for t in tests]}
    m = re.search(r"def\s+(\w+)\s*\(\s*self", starter_code) or re.search(r"def\s+(\w+)\s*\(", starter_code)
    if m is None:
        raise TestsError("functional LiveCodeBench tests need starter code naming the function")
    cases = [{"args": [json.loads(line) for line in t["input"].split("\n") if line.strip()],
              "expected": json.loads(t["output"])} for t in tests]
    return {"functional": {"fn_name": m.group(1), "cases": cases}}
