"""Call-based Python tests (`functional` and `asserts`), judged on the host.

The solution runs in the sandbox behind `sandbox_harness` (a call server). The tests run HERE, on
the host: for `functional` the expected values are compared with the plain data the sandbox returns;
for `asserts` the test code itself runs on the host with each solution-defined name replaced by a
stub that forwards the call into the sandbox. So neither expected values nor the assert statements
ever enter the sandbox, and nothing the program does in there (exiting 0, printing markers, patching
builtins, lying `__eq__`) can make a test pass: only returning the right values can.
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

from amray.rewards.sandbox import Sandbox, stop_tree
from amray.rewards.sandbox_harness import decode, encode

_HARNESS = Path(__file__).with_name("sandbox_harness.py").read_text()
# Modules test code may use without importing them (MBPP asserts lean on the solution's `import math`).
_TEST_GLOBALS = ("math", "re", "string", "collections", "itertools", "functools", "heapq", "bisect")


class SandboxCallError(BaseException):
    """The sandboxed program died, timed out or broke the protocol. A BaseException so that test
    code's `except Exception` cannot swallow it: the row fails."""


class CallSession:
    """One sandboxed Python process serving calls into the solution."""

    def __init__(self, box: Sandbox, python: str, code: str, deadline: float) -> None:
        self.box, self.deadline = box, deadline
        self.limit = box.config.output_bytes
        self.stderr_total = 0
        self.stderr_tail = b""
        self._buf = b""
        box.write("harness.py", _HARNESS)
        solution = box.write("solution.py", code)
        cpu_s = max(1, math.ceil(deadline - time.monotonic()) + 1)
        self.proc = box.spawn([python, "-I", "/box/harness.py", solution], cpu_s=cpu_s)
        self.dead: str | None = None
        hello = self._receive(deadline)
        if "load_error" in hello:
            self.close()
            raise SandboxCallError(f"solution failed to load: {hello['load_error']}")
        self.names: list[str] = hello.get("names", [])

    def call(self, target: list, args: tuple | list, kwargs: dict | None = None, timeout_s: float = 6.0) -> object:
        """Call into the sandbox; returns decoded plain data or a `RemoteObject`."""
        return self._request({"op": "call", "target": target, "args": self._encode(list(args)),
                              "kwargs": self._encode(dict(kwargs or {}))}, timeout_s)

    def getattr(self, handle: int, name: str, timeout_s: float) -> object:
        return self._request({"op": "getattr", "handle": handle, "name": name}, timeout_s)

    def setattr(self, handle: int, name: str, value: object, timeout_s: float) -> None:
        self._request({"op": "setattr", "handle": handle, "name": name, "value": self._encode(value)}, timeout_s)

    def _encode(self, value: object) -> object:
        try:
            return encode(value, extra=lambda x: {"__handle__": x._handle} if isinstance(x, RemoteObject) else None)
        except TypeError as e:
            raise TypeError(f"argument cannot be sent to the sandbox: {e}") from None

    def _request(self, request: dict, timeout_s: float) -> object:
        if self.dead:
            raise SandboxCallError(self.dead)
        data = (json.dumps(request) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.proc.stdin.fileno(), data):]
        except OSError:
            self._die("the program exited")
        answer = self._receive(min(self.deadline, time.monotonic() + timeout_s))
        if "raise" in answer:
            name, message = answer["raise"]
            cls = getattr(builtins, str(name), None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                raise cls(message)
            raise RuntimeError(f"{name}: {message}")
        if "handle" in answer:
            return RemoteObject(self, int(answer["handle"]), str(answer.get("type")), timeout_s)
        try:
            return decode(answer["value"])
        except (KeyError, ValueError, TypeError) as e:
            self._die(f"malformed answer from the sandbox: {e}")

    def close(self) -> None:
        stop_tree(self.proc)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()
        self.box.kill_all()

    def _receive(self, deadline: float) -> dict:
        out, err = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._die("time limit exceeded")
            ready, _, _ = select.select([out, err], [], [], remaining)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if fd == err:
                    self.stderr_total += len(chunk)
                    self.stderr_tail = (self.stderr_tail + chunk)[-2000:]
                    if self.stderr_total > self.limit:
                        self._die("output limit exceeded")
                    continue
                if not chunk:
                    self._die("the program exited" + self._stderr_note())
                self._buf += chunk
                if len(self._buf) > self.limit:
                    self._die("output limit exceeded")
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._die("malformed answer from the sandbox")
        return answer

    def _stderr_note(self) -> str:
        tail = self.stderr_tail[-300:].decode(errors="replace").strip()
        return f": {tail}" if tail else ""

    def _die(self, reason: str) -> None:
        self.dead = reason
        stop_tree(self.proc)
        raise SandboxCallError(reason)


class RemoteCallable:
    """A top-level function or class of the solution, as test code sees it."""

    def __init__(self, session: CallSession, target: list, timeout_s: float) -> None:
        self.session, self.target, self.timeout_s = session, target, timeout_s

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.session.call(self.target, args, kwargs, self.timeout_s)


class RemoteObject:
    """An object that lives in the sandbox (`Solution()`, a tree node, a bound method). Attribute
    reads and writes and calls go to the sandbox; it equals nothing but itself and has no truth
    value, so returning one never satisfies a test."""

    def __init__(self, session: CallSession, handle: int, type_name: str, timeout_s: float) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_timeout_s", timeout_s)

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._session.getattr(self._handle, name, self._timeout_s)

    def __setattr__(self, name: str, value: object) -> None:
        self._session.setattr(self._handle, name, value, self._timeout_s)

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._session.call(["handle", self._handle], args, kwargs, self._timeout_s)

    def __repr__(self) -> str:
        return f"<{self._type} object in the sandbox>"

    def __eq__(self, other: object) -> bool:  # only plain data can equal an expected value
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:  # else `assert candidate(x)` would pass on any returned object
        raise TypeError(f"a {self._type} object from the sandbox has no truth value; return plain data")

    def __len__(self) -> int:
        raise TypeError(f"a {self._type} object from the sandbox has no length; return plain data")


def run_functional(session: CallSession, spec: dict, timeout_s: float) -> list[dict]:
    """LiveCodeBench call-based cases; stops at the first failure (later cases are not run)."""
    results = []
    for i, case in enumerate(spec["cases"]):
        start = time.monotonic()
        entry: dict = {"case": i}
        try:
            value = session.call(["fn", spec["fn_name"]], case["args"], timeout_s=timeout_s)
            entry["passed"] = same_value(value, case["expected"])
            if not entry["passed"]:
                entry["error"] = f"wrong answer: got {_short(value)}"
        except SandboxCallError as e:
            entry.update(passed=False, error=str(e))
        except Exception as e:  # noqa: BLE001 - the solution raised
            entry.update(passed=False, error=f"{type(e).__name__}: {_short(e)}")
        entry["elapsed_s"] = round(time.monotonic() - start, 4)
        results.append(entry)
        if not entry["passed"]:
            break
    return results


def run_asserts(session: CallSession, code: str, solution: str, timeout_s: float) -> list[dict]:
    """Run the test code on the host, one top-level statement at a time, against sandbox stubs."""
    tree = ast.parse(code)  # the caller has checked it parses
    namespace: dict = {"__name__": "__test__"}
    for module in _TEST_GLOBALS:
        namespace[module] = __import__(module)
    for name in defined_names(solution):
        if (name not in namespace and not hasattr(builtins, name)) or only_called_on_the_left(name, tree):
            namespace[name] = RemoteCallable(session, ["name", name], timeout_s)
    results = []
    for stmt in tree.body:
        start = time.monotonic()
        entry: dict = {"line": stmt.lineno, "test": ast.get_source_segment(code, stmt)[:200]}
        try:
            exec(compile(ast.Module([stmt], type_ignores=[]), "<tests>", "exec"), namespace)
            entry["passed"] = True
        except SandboxCallError as e:
            entry.update(passed=False, error=str(e))
        except Exception as e:  # noqa: BLE001 - a failed assert, or the solution raised
            entry.update(passed=False, error=f"{type(e).__name__}: {_short(e)}")
        entry["elapsed_s"] = round(time.monotonic() - start, 4)
        results.append(entry)
        if not entry["passed"]:
            break
    return results


def defined_names(solution: str) -> list[str]:
    """Top-level functions, classes and assigned names of the solution (what tests may call)."""
    names = []
    for node in ast.parse(solution).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def only_called_on_the_left(name: str, tests: ast.Module) -> bool:
    """May a solution function shadowing a builtin or test global (MBPP has `def sum(a, b)`) be
    stubbed? Only if the tests use the name solely as `name(...) == <expected>`: a solution
    defining `set` must not get to compute both sides of `set(f(x)) == set([...])`."""
    uses = [n for n in ast.walk(tests) if isinstance(n, ast.Name) and n.id == name]
    on_left = {id(node.left.func) for node in ast.walk(tests) if isinstance(node, ast.Compare)
               and isinstance(node.left, ast.Call) and isinstance(node.left.func, ast.Name) and node.left.func.id == name}
    return bool(uses) and all(id(n) in on_left for n in uses)


def same_value(value: object, expected: object) -> bool:
    """LiveCodeBench's call-based check: `prediction == expected` with tuples read as lists."""
    return _as_lists(value) == expected


def _as_lists(x: object) -> object:
    if isinstance(x, (list, tuple)):
        return [_as_lists(i) for i in x]
    if isinstance(x, dict):
        return {k: _as_lists(v) for k, v in x.items()}
    return x


def _short(x: object, limit: int = 200) -> str:
    text = repr(x) if not isinstance(x, BaseException) else str(x)
    return text if len(text) <= limit else text[:limit] + "..."
