"""Call-based Python tests (`functional` and `asserts`): judged in a sandbox, never on the host.

A row runs two sandboxed processes of `sandbox_harness`, each in its own bubblewrap (own pid, ipc,
net and mount namespaces, the slot's uid and limits): the *server* holds the solution and answers
calls; the *judge* holds the tests (the asserts code, or the cases with their expected values) and
calls the solution through the host, which only relays lines between the two. Why this design:
- the tests never share an interpreter with the solution, so a solution cannot rebind a test's
  names or builtins (`def abs(x): return 0`), forge a verdict, or read an expected value; an object
  with a lying `__eq__` reaches the judge only as an opaque handle;
- dataset test code (a poisoned row) runs unprivileged, without network or host files, instead of
  as the reward worker on the host;
- everything a row costs runs under its deadline: the host evaluates nothing (`sum(range(10**11))`
  burns the judge's time, not the worker's), and what it reads is bounded: a line of at most
  `output_bytes` from the server, waited for at most `test_timeout_s` per call; the judge's
  messages are parsed only after a size check, so a deep, huge, non-UTF-8 or never-ending line is
  the program's failure, never the scorer's, and the sandbox is torn down whatever happens.
Which names of the test code call into the solution (the stubs): see `solution_names`.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import select
import time
from pathlib import Path

from amray.rewards.sandbox import Sandbox, SandboxProcess
from amray.rewards.sandbox_harness import TEST_GLOBALS

_HARNESS = Path(__file__).with_name("sandbox_harness.py").read_text()
_JUDGE_LINE_BYTES = 64 << 20  # a call's arguments come from the dataset (LiveCodeBench inputs reach MBs)


class SolutionLoadError(Exception):
    """The solution failed to load (raised, timed out, or broke the protocol before greeting)."""


class CallFailed(Exception):
    """A sandboxed process died, timed out, overflowed its output or broke the protocol."""


class _Peer:
    """One sandboxed process as the host sees it: lines out of it (bounded in size and time), lines into it."""

    def __init__(self, proc: SandboxProcess, name: str, line_bytes: int, stderr_bytes: int) -> None:
        self.proc, self.name = proc, name
        self.line_bytes, self.stderr_bytes = line_bytes, stderr_bytes
        self.buf = b""
        self.stderr_total = 0
        self.stderr_tail = b""
        os.set_blocking(proc.stdin.fileno(), False)  # a peer that stops reading must not stall the host

    def send(self, line: bytes, deadline: float) -> None:
        data = memoryview(line + b"\n")
        fd = self.proc.stdin.fileno()
        while data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise CallFailed("time limit exceeded")
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                continue
            except OSError:
                raise CallFailed(f"{self.name} exited{self._stderr_note()}") from None

    def receive(self, deadline: float) -> bytes:
        """The next line (without its newline)."""
        out, err = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        while b"\n" not in self.buf:
            if len(self.buf) > self.line_bytes:
                raise CallFailed("output limit exceeded")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CallFailed("time limit exceeded")
            for fd in select.select([out, err], [], [], remaining)[0]:
                chunk = os.read(fd, 1 << 16)
                if fd == err:
                    self.stderr_total += len(chunk)
                    self.stderr_tail = (self.stderr_tail + chunk)[-2000:]
                    if self.stderr_total > self.stderr_bytes:
                        raise CallFailed("output limit exceeded")
                elif not chunk:
                    raise CallFailed(f"{self.name} exited{self._stderr_note()}")
                else:
                    self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        if len(line) > self.line_bytes:
            raise CallFailed("output limit exceeded")
        return line

    def message(self, deadline: float) -> dict:
        line = self.receive(deadline)
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            raise CallFailed(f"malformed message from {self.name}")
        return message

    def _stderr_note(self) -> str:
        tail = self.stderr_tail[-300:].decode(errors="replace").strip()
        return f": {tail}" if tail else ""


def judge_calls(box: Sandbox, solution: str, tests: dict, count: int,
                deadline: float) -> list[tuple[bool, str | None, float]]:
    """Run `count` tests (the judge's first line) against `solution`: (passed, error, elapsed_s) per
    test, stopping at the first failure. SolutionLoadError if the solution never got to serve."""
    cfg = box.config
    box.write("harness.py", _HARNESS)
    solution_path = box.write("solution.py", solution)
    cpu_s = max(1, math.ceil(deadline - time.monotonic()) + 1)
    judge = _Peer(box.spawn([cfg.python, "-I", "/box/harness.py", "judge"], cpu_s=cpu_s),
                  "the tests", _JUDGE_LINE_BYTES, cfg.output_bytes)
    server = _Peer(box.spawn([cfg.python, "-I", "/box/harness.py", "serve", solution_path], cpu_s=cpu_s),
                   "the program", cfg.output_bytes, cfg.output_bytes)
    try:
        try:
            judge.send(json.dumps(tests).encode(), deadline)
            judge.send(server.receive(deadline), deadline)  # the greeting, read by the judge
            first = judge.message(deadline)
        except CallFailed as e:
            raise SolutionLoadError(str(e)) from None
        if "load_error" in first:
            raise SolutionLoadError(f"solution failed to load: {str(first['load_error'])[:1000]}")
        return _relay(judge, server, first, count, deadline, cfg.test_timeout_s)
    finally:  # the box stops whatever is left if this raised midway; this is the normal path
        judge.proc.stop()
        server.proc.stop()
        box.kill_all()


def _relay(judge: _Peer, server: _Peer, message: dict, count: int, deadline: float,
           call_timeout_s: float) -> list[tuple[bool, str | None, float]]:
    outcomes: list[tuple[bool, str | None, float]] = []
    start = time.monotonic()
    try:
        while True:
            if "call" in message:
                server.send(json.dumps(message["call"]).encode(), deadline)
                judge.send(server.receive(min(deadline, time.monotonic() + call_timeout_s)), deadline)
            elif isinstance(message.get("report"), dict) and isinstance(message["report"].get("ok"), bool):
                ok, error = message["report"]["ok"], message["report"].get("error")
                outcomes.append((ok, None if ok else str(error)[:1000], round(time.monotonic() - start, 4)))
                if not ok or len(outcomes) == count:
                    return outcomes
                start = time.monotonic()
            else:
                raise CallFailed("malformed message from the tests")
            message = judge.message(deadline)
    except CallFailed as e:  # the test under way fails with why; later tests do not run
        outcomes.append((False, str(e), round(time.monotonic() - start, 4)))
        return outcomes


def run_functional(box: Sandbox, solution: str, spec: dict, deadline: float) -> list[dict]:
    """LiveCodeBench call-based cases; stops at the first failure (later cases are not run)."""
    tests = {"style": "functional", "fn_name": spec["fn_name"], "cases": spec["cases"]}
    outcomes = judge_calls(box, solution, tests, len(spec["cases"]), deadline)
    return [{"case": i, "passed": ok, **({"error": error} if error else {}), "elapsed_s": elapsed}
            for i, (ok, error, elapsed) in enumerate(outcomes)]


def run_asserts(box: Sandbox, solution: str, code: str, deadline: float) -> list[dict]:
    """The test code, one top-level statement at a time, in the judge; stops at the first failure."""
    tree = ast.parse(code)  # the caller has checked it parses
    tests = {"style": "asserts", "code": code, "stubs": solution_names(solution, tree)}
    outcomes = judge_calls(box, solution, tests, len(tree.body), deadline)
    return [{"line": stmt.lineno, "test": ast.get_source_segment(code, stmt)[:200], "passed": ok,
             **({"error": error} if error else {}), "elapsed_s": elapsed}
            for stmt, (ok, error, elapsed) in zip(tree.body, outcomes)]


def solution_names(solution: str, tests: ast.Module) -> list[str]:
    """The names of the test code that call into the solution; every other name resolves in the
    judge (builtins, TEST_GLOBALS, the test's own definitions). A solution name that shadows a
    builtin or test global (MBPP's `def sum(a, b)`) is taken only when it must be the entry point:
    the tests use no other solution name and no other shadowing one. So `def abs(x): return 0`
    beside `truncate_number` cannot answer `abs(candidate(x) - 0.5) < 1e-6` for the tests."""
    defined = set(defined_names(solution))
    bound_by_tests = _module_bindings(tests)
    used = {n.id for n in ast.walk(tests) if isinstance(n, ast.Name)} - bound_by_tests
    own = defined - set(dir(builtins)) - set(TEST_GLOBALS) - bound_by_tests
    shadowing = (defined - own - bound_by_tests) & used
    if own & used or len(shadowing) != 1:
        return sorted(own)
    return sorted(own | shadowing)


def _module_bindings(tree: ast.Module) -> set[str]:
    """Names the test code binds at module level (defs, imports, assignments, loop targets)."""
    names: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)  # its body is a scope of its own
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif not isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            todo.extend(ast.iter_child_nodes(node))
    return names


def defined_names(solution: str) -> list[str]:
    """Top-level functions, classes and assigned names of the solution (what tests may call)."""
    names = []
    for node in ast.parse(solution).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names
