"""Rewards users bring: `reward.custom=path/to/file.py:fn` (or `package.module:fn`), a function of
the row and the response returning a float, or a float and an info dict. Rows whose `source` is
`reward.custom_source` (default `custom`) are scored by it.

    def reward(row: dict, response: str) -> float | tuple[float, dict]: ...

Like the built-in sources it runs time-bounded: in a child process of the reward worker (killed
past `reward.timeout_s`), so a slow or crashing function costs that row, not the run. A function
defined in a notebook is registered with `RewardPool.register(name, fn)` and travels to the
workers by value (cloudpickle).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
from collections.abc import Callable, Iterator
from pathlib import Path

from amray.rewards.types import RewardResult

_loaded: dict[str, object] = {}  # spec -> function (inside the child)
_registered: dict[str, bytes] = {}  # name -> cloudpickled function (set in each reward worker)


def register(name: str, pickled: bytes) -> None:
    _registered[name] = pickled


def score_custom(row: dict, response: str, payload: str | bytes, timeout_s: float) -> RewardResult:
    """`payload`: a `file.py:fn` / `module:fn` spec, or a registered function's pickled bytes."""
    from amray.rewards.isolation import WorkerError, WorkerTimeout, shared_worker

    spec = payload
    try:
        reward, info = shared_worker("custom").call("amray.rewards.custom:call", (payload, row, response), timeout_s)
    except WorkerTimeout:
        return RewardResult.failed(f"custom reward {_name(spec)} took longer than reward.timeout_s={timeout_s:g}s")
    except WorkerError as e:
        return RewardResult.failed(f"custom reward {_name(spec)} failed: {str(e)[:500]}")
    return RewardResult(reward, {"custom": _name(spec), **info})


def call(payload: str | bytes, row: dict, response: str) -> tuple[float, dict]:
    """In the child: resolve the function, call it, check what it returned."""
    fn = resolve(payload)
    out = fn(row, response)
    reward, info = (out if isinstance(out, tuple) and len(out) == 2 else (out, {}))
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise TypeError(f"a reward function must return a finite number (or a number and a dict), got {out!r}")
    if not isinstance(info, dict):
        raise TypeError(f"the info a reward function returns must be a dict, got {type(info).__name__}")
    return float(reward), info


def resolve(payload: str | bytes):
    if isinstance(payload, bytes):
        import cloudpickle

        return cloudpickle.loads(payload)
    if payload not in _loaded:
        _loaded[payload] = _import(payload)
    return _loaded[payload]


def _import(spec: str):
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"reward.custom={spec!r}: expected path/to/file.py:function or package.module:function")
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"reward.custom={spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(f"amray_custom_{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise AttributeError(f"reward.custom={spec!r}: {target} has no function {name!r}")
    return fn


def check_spec(spec: str) -> None:
    """In the driver, before any actor starts: the function can be found."""
    _import(spec)


def registered(source: str) -> bytes | None:
    return _registered.get(source)


def _name(spec: str | bytes) -> str:
    return spec if isinstance(spec, str) else "(registered from Python)"


@contextlib.contextmanager
def by_value(fn: Callable) -> Iterator[None]:
    """Pickle `fn`'s own module by value while it is registered: a function from a notebook cell
    travels by value anyway, but one imported from the user's own file (my_rewards.py, a test
    module) would otherwise be looked up by name in the reward workers, which cannot import it."""
    import sys

    import cloudpickle

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    path = str(getattr(module, "__file__", "") or "")
    local = module is not None and path and "site-packages" not in path and "dist-packages" not in path \
        and not module.__name__.startswith("amray.")
    if local:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        if local:
            cloudpickle.unregister_pickle_by_value(module)
