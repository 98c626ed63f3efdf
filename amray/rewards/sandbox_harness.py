"""Call server for call-based tests; runs INSIDE the sandbox (stdlib only, copied in as a script).

The host sends one JSON request per line and gets one JSON answer per line, over a private copy of
the original stdin/stdout (the solution's own prints go to stderr). It only ever sees arguments:
expected values stay on the host, which compares the plain data sent back. Values are encoded with
exact types only, so an object with a lying `__eq__` (or any non-data object) comes back as an
opaque handle and can never equal an expected value.

Requests: {"op": "call", "target": T, "args": [...], "kwargs": {...}} with T one of
  ["name", "f"]           a top-level callable of the solution
  ["fn", "f"]             top-level `f`, else `Solution().f` (LeetCode style), fresh instance per call
  ["handle", 3]           an object the server handed out earlier (e.g. a bound method)
and {"op": "getattr" | "setattr", "handle": 3, "name": "left", "value": ENC} on such objects.
Answers: {"value": ENC} | {"handle": id, "type": "Name"} | {"raise": ["ValueError", "message"]}
First line from the server: {"names": [callable top-level names]} or {"load_error": "..."}.
"""

from __future__ import annotations

import json
import math
import os
import sys

MAX_DEPTH = 100
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


def serve(solution_path: str) -> None:
    channel_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    channel_out = os.dup(1)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)  # the solution reading stdin gets EOF
    os.dup2(2, 1)  # the solution's prints go to stderr, never into the answers
    sys.stdin = open(0, "r", closefd=False)

    def send(msg: dict) -> None:
        data = (json.dumps(msg) + "\n").encode()
        while data:
            data = data[os.write(channel_out, data):]

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
    for line in channel_in:
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


if __name__ == "__main__":
    serve(sys.argv[1])
