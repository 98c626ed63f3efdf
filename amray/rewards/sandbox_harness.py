"""Both ends of a call-based test, each run INSIDE a sandbox of its own (stdlib only, copied in).

    harness.py serve /box/solution.py   hosts the solution and answers calls into it
    harness.py judge                    runs the row's tests, calling the solution through the host

The two never share a process: the judge holds the test code and the expected values and only ever
receives plain data (or opaque handles) from the server, so nothing the solution does, in its own
interpreter, can touch the tests' names, builtins or verdicts. The host only relays lines (see
code_calls). Each side speaks one JSON object per line over a private copy of its original
stdin/stdout (prints go to stderr). Values are encoded with exact types only, so an object with a
lying `__eq__` (or any non-data object) comes back as an opaque handle and can never equal a value.

Server requests: {"op": "call", "target": T, "args": [...], "kwargs": {...}} with T one of
  ["name", "f"]           a top-level callable of the solution
  ["fn", "f"]             top-level `f`, else `Solution().f` (LeetCode style), fresh instance per call
  ["handle", 3]           an object the server handed out earlier (e.g. a bound method)
and {"op": "getattr" | "setattr", "handle": 3, "name": "left", "value": ENC} on such objects.
Answers: {"value": ENC} | {"handle": id, "type": "Name"} | {"raise": ["ValueError", "message"]}
First line from the server: {"names": [callable top-level names]} or {"load_error": "..."}.

The judge reads the tests as its first line ({"style": "asserts", "code", "stubs"} or {"style":
"functional", "fn_name", "cases"}), then the server's greeting, then one server answer per call. It
writes {"call": REQUEST} for each call, {"load_error": "..."} if the solution did not load, and
{"report": {"ok": bool, "error": str}} per test, stopping at the first failure.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import sys
from collections.abc import Callable, Iterator

MAX_DEPTH = 100
# Modules test code may use without importing them (MBPP asserts lean on the solution's `import math`).
TEST_GLOBALS = ("math", "re", "string", "collections", "itertools", "functools", "heapq", "bisect")
# LiveCodeBench's import header: what its solutions may use unimported (`List`, `defaultdict`, `ceil`, ...).
PRELUDE = "".join(f"from {m} import *\n" for m in (
    "string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
    "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")) + (
    "import string, re, datetime, collections, heapq, bisect, copy, math, random, statistics, itertools, "
    "functools, operator, io, sys, json\nsys.setrecursionlimit(50000)\n")


class Unencodable(TypeError):
    pass


def encode(x: object, depth: int = 0, extra=None) -> object:
    """Plain JSON for builtin data; tuples, sets, dicts, complex and bytes tagged. Subclasses are
    read through their base type (a lying `__eq__` does not survive); anything else is Unencodable
    unless `extra(x)` encodes it."""
    if depth > MAX_DEPTH:
        raise Unencodable("value nested too deeply")
    if x is None or type(x) in (bool, int, str):
        return x
    if extra is not None:
        special = extra(x)
        if special is not None:
            return special
    d = depth + 1
    if isinstance(x, int):
        return int.__int__(x)
    if isinstance(x, float):
        v = float.__float__(x)
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, complex):
        return {"__complex__": [encode(x.real, d), encode(x.imag, d)]}
    if isinstance(x, list):
        return [encode(i, d, extra) for i in list.__iter__(x)]
    if isinstance(x, tuple):
        return {"__tuple__": [encode(i, d, extra) for i in tuple.__iter__(x)]}
    if isinstance(x, (set, frozenset)):
        return {"__set__": [encode(i, d, extra) for i in (set.__iter__(x) if isinstance(x, set) else frozenset.__iter__(x))]}
    if isinstance(x, dict):
        return {"__dict__": [[encode(k, d, extra), encode(v, d, extra)] for k, v in dict.items(x)]}
    if isinstance(x, (bytes, bytearray)):
        return {"__bytes__": bytes(x).hex()}
    raise Unencodable(f"a {type(x).__name__} is not plain data")


def decode(x: object, depth: int = 0, handles: list | None = None) -> object:
    """Inverse of `encode` (on the host: on data that came out of the sandbox). `{"__handle__": i}`
    (an object the sandbox handed out earlier, sent back as an argument) only decodes inside."""
    if depth > MAX_DEPTH + 1:
        raise ValueError("value nested too deeply")
    d = depth + 1
    if isinstance(x, list):
        return [decode(i, d, handles) for i in x]
    if isinstance(x, dict):
        if len(x) != 1:
            raise ValueError(f"malformed tagged value with keys {sorted(x)[:5]}")
        (tag, v), = x.items()
        if tag == "__tuple__":
            return tuple(decode(i, d, handles) for i in v)
        if tag == "__set__":
            return {decode(i, d, handles) for i in v}
        if tag == "__dict__":
            return {decode(k, d, handles): decode(val, d, handles) for k, val in v}
        if tag == "__float__":
            return float(v)
        if tag == "__complex__":
            return complex(float(v[0]), float(v[1]))
        if tag == "__bytes__":
            return bytes.fromhex(v)
        if tag == "__handle__" and handles is not None:
            return handles[int(v)]
        raise ValueError(f"unknown tag {tag!r}")
    return x


def private_channel() -> tuple[Callable[[], bytes], Callable[[dict], None]]:
    """(read line, send message) on copies of stdin/stdout; fds 0 and 1 become /dev/null and stderr,
    so code run here that reads input gets EOF and its prints never reach the channel."""
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.dup(1)
    os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdin = open(0, "r", closefd=False)

    def send(msg: dict) -> None:
        data = (json.dumps(msg) + "\n").encode()
        while data:
            data = data[os.write(channel_out, data):]
    return channel_in.readline, send


def serve(solution_path: str) -> None:
    read_line, send = private_channel()

    namespace: dict = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(PRELUDE, namespace)
        with open(solution_path, encoding="utf-8") as f:
            exec(compile(f.read(), "solution.py", "exec"), namespace)
    except BaseException as e:  # noqa: BLE001 - the solution failed to load: report and stop
        send({"load_error": f"{type(e).__name__}: {e}"})
        return
    send({"names": sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("__"))})
    handles: list = []
    for line in iter(read_line, b""):
        try:
            request = json.loads(line)
            op = request.get("op", "call")
            if op == "getattr":
                result = getattr(handles[request["handle"]], request["name"])
            elif op == "setattr":
                setattr(handles[request["handle"]], request["name"], decode(request["value"], handles=handles))
                result = None
            else:
                fn = resolve(namespace, handles, request["target"])
                args = decode(request.get("args", []), handles=handles)
                kwargs = decode(request.get("kwargs", {"__dict__": []}), handles=handles)
                result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - the solution raised: the host sees the type
            send({"raise": [type(e).__name__, str(e)[:1000]]})
            continue
        try:
            send({"value": encode(result)})
        except Unencodable:
            handles.append(result)
            send({"handle": len(handles) - 1, "type": type(result).__name__})
        except Exception as e:  # noqa: BLE001 - e.g. an int too large to print
            send({"raise": ["ValueError", f"result could not be sent: {e}"[:1000]]})


def resolve(namespace: dict, handles: list, target: list) -> object:
    kind, *rest = target
    if kind == "name":
        return namespace[rest[0]]
    if kind == "fn":
        name = rest[0]
        if callable(namespace.get(name)):
            return namespace[name]
        if isinstance(namespace.get("Solution"), type) and hasattr(namespace["Solution"], name):
            return getattr(namespace["Solution"](), name)
        raise NameError(f"no function `{name}` and no `Solution.{name}` in the solution")
    if kind == "handle":
        return handles[rest[0]]
    raise ValueError(f"unknown target kind {kind!r}")


class ProgramError(BaseException):
    """The server broke the protocol. A BaseException so that test code's `except Exception` cannot
    swallow it; once raised, every later call raises it too and the current test fails."""


class Server:
    """The judge's view of the solution's server: one call, one answer, both through the host."""

    def __init__(self, read_line: Callable[[], bytes], send: Callable[[dict], None]) -> None:
        self.read_line, self.send = read_line, send
        self.broken: str | None = None

    def receive(self) -> dict:
        line = self.read_line()
        if not line:
            os._exit(0)  # the host hung up: nothing is left to judge
        try:
            answer = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, nested too deeply
            answer = e
        if not isinstance(answer, dict):
            self.broken = f"malformed answer from the program: {str(answer)[:200] or type(answer).__name__}"
            raise ProgramError(self.broken)
        return answer

    def request(self, request: dict) -> object:
        if self.broken:
            raise ProgramError(self.broken)
        self.send({"call": request})
        answer = self.receive()
        try:
            if "raise" in answer:
                name, message = answer["raise"]
                cls = getattr(builtins, name, None) if isinstance(name, str) else None
                error = cls(str(message)) if isinstance(cls, type) and issubclass(cls, Exception) \
                    else RuntimeError(f"{name}: {message}")
            elif "handle" in answer:
                return RemoteObject(self, int(answer["handle"]), str(answer.get("type")))
            else:
                return decode(answer["value"])
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as e:
            self.broken = f"malformed answer from the program: {type(e).__name__}: {str(e)[:200]}"
            raise ProgramError(self.broken) from None
        raise error

    def call(self, target: list, args: tuple | list, kwargs: dict | None = None) -> object:
        return self.request({"op": "call", "target": target, "args": self.encode(list(args)),
                             "kwargs": self.encode(dict(kwargs or {}))})

    @staticmethod
    def encode(value: object) -> object:
        try:
            return encode(value, extra=lambda x: {"__handle__": x._handle} if isinstance(x, RemoteObject) else None)
        except TypeError as e:
            raise TypeError(f"argument cannot be sent to the program: {e}") from None


class RemoteCallable:
    """A top-level function or class of the solution, as test code sees it."""

    def __init__(self, server: Server, name: str) -> None:
        self.server, self.name = server, name

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.server.call(["name", self.name], args, kwargs)


class RemoteObject:
    """An object that lives in the solution's process (`Solution()`, a tree node, a bound method).
    Attribute reads and writes and calls go there; it equals nothing but itself and has no truth
    value, so returning one never satisfies a test."""

    def __init__(self, server: Server, handle: int, type_name: str) -> None:
        object.__setattr__(self, "_server", server)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_type", type_name)

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._server.request({"op": "getattr", "handle": self._handle, "name": name})

    def __setattr__(self, name: str, value: object) -> None:
        self._server.request({"op": "setattr", "handle": self._handle, "name": name, "value": self._server.encode(value)})

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._server.call(["handle", self._handle], args, kwargs)

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


def judge() -> None:
    """Run the tests of the first line against the server behind the host; see the module docstring."""
    read_line, send = private_channel()
    tests = json.loads(read_line())
    server = Server(read_line, send)
    try:
        hello = server.receive()
    except ProgramError as e:
        hello = {"load_error": str(e)}
    if "load_error" in hello:
        send({"load_error": str(hello["load_error"])[:1000]})
        return
    run = run_asserts if tests["style"] == "asserts" else run_functional
    for outcome in run(server, tests):
        if server.broken:
            outcome = {"ok": False, "error": server.broken}
        send({"report": outcome})
        if not outcome["ok"]:
            return


def run_asserts(server: Server, tests: dict) -> Iterator[dict]:
    """One outcome per top-level statement of the test code; names in `stubs` call the solution."""
    namespace: dict = {"__name__": "__test__"}
    for module in TEST_GLOBALS:
        namespace[module] = __import__(module)
    for name in tests["stubs"]:
        namespace[name] = RemoteCallable(server, name)
    for stmt in ast.parse(tests["code"]).body:
        yield attempt(lambda: exec(compile(ast.Module([stmt], type_ignores=[]), "<tests>", "exec"), namespace))


def run_functional(server: Server, tests: dict) -> Iterator[dict]:
    """LiveCodeBench call-based cases: `prediction == expected` with tuples read as lists."""
    for case in tests["cases"]:
        def check(case: dict = case) -> str | None:
            value = server.call(["fn", tests["fn_name"]], case["args"])
            return None if as_lists(value) == case["expected"] else f"wrong answer: got {short(value)}"
        yield attempt(check)


def attempt(test: Callable[[], str | None]) -> dict:
    """{"ok": True} if `test` returns None, else {"ok": False, "error": why}."""
    try:
        error = test()
    except ProgramError as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - a failed assert, or the solution raised
        error = f"{type(e).__name__}: {short(e)}"
    return {"ok": error is None, **({"error": error} if error else {})}


def as_lists(x: object) -> object:
    if isinstance(x, (list, tuple)):
        return [as_lists(i) for i in x]
    if isinstance(x, dict):
        return {k: as_lists(v) for k, v in x.items()}
    return x


def short(x: object, limit: int = 200) -> str:
    text = repr(x) if not isinstance(x, BaseException) else str(x)
    return text if len(text) <= limit else text[:limit] + "..."


if __name__ == "__main__":
    judge() if sys.argv[1] == "judge" else serve(sys.argv[2])
