"""Run a function in a persistent child process under a hard wall-clock deadline.

Why not math-verify's own timeout: it uses `signal.alarm`, which only works on the main thread, so
inside Ray worker threads it either raises or (as other frameworks found) scores every row 0. Here
the deadline is enforced from outside: past it the child is killed (its whole process group) and a
fresh one is started lazily on the next call. The child also caps its own CPU time per call
(RLIMIT_CPU), so even an orphaned child stuck in a computation dies on its own.

    worker = TimedWorkerProcess(preload=["amray.rewards.math"])
    result = worker.call("amray.rewards.math:verify_math", ("\\boxed{2}", "2"), timeout_s=10)
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_HEADER = struct.Struct("<Q")
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding `amray/`
_SPAWN_TIMEOUT_S = 120.0  # a cold child imports sympy; this is not part of a row's budget


class WorkerTimeout(TimeoutError):
    """The call did not finish within its deadline; the child was killed."""


class WorkerError(RuntimeError):
    """The call raised inside the child, or the child died."""


class TimedWorkerProcess:
    """One child Python process; calls run one at a time (thread-safe), each under a deadline."""

    def __init__(self, preload: list[str] | tuple[str, ...] = (), memory_mb: int | None = None) -> None:
        self.preload = tuple(preload)
        """Modules the child imports at start, so the first call does not pay for them."""
        self.memory_mb = memory_mb
        """RLIMIT_AS of the child, MiB (None: unlimited)."""
        self._proc: subprocess.Popen | None = None
        self._stderr: object | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        """How many times a child was (re)started; lets tests see that a kill happened."""

    def call(self, func: str, args: tuple, timeout_s: float) -> object:
        """Run `module:function(*args)` in the child; raise WorkerTimeout past `timeout_s` seconds."""
        payload = pickle.dumps((func, args, timeout_s), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            for attempt in (0, 1):
                proc = self._ensure_started()
                try:
                    os.write(proc.stdin.fileno(), _HEADER.pack(len(payload)))
                    _write_all(proc.stdin.fileno(), payload)
                    break
                except (BrokenPipeError, OSError):
                    self._kill()  # died between calls (e.g. OOM); start again once
                    if attempt:
                        raise WorkerError(f"child for {func} died before taking the call: {self._stderr_tail()}")
            deadline = time.monotonic() + timeout_s
            try:
                (n,) = _HEADER.unpack(_read_exact(proc.stdout.fileno(), _HEADER.size, deadline))
                status, value = pickle.loads(_read_exact(proc.stdout.fileno(), n, deadline))
            except WorkerTimeout:
                self._kill()
                raise WorkerTimeout(f"timeout after {timeout_s:g} s") from None
            except EOFError:
                tail = self._stderr_tail()
                self._kill()
                raise WorkerError(f"child died while running {func}: {tail or 'no message'}") from None
        if status == "err":
            raise WorkerError(value)
        return value

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __del__(self) -> None:
        try:
            self._kill()
        except Exception:  # noqa: BLE001 - at interpreter exit modules may already be gone
            pass

    def _ensure_started(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._kill()
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")])))
        cmd = [sys.executable, "-c", "from amray.rewards.isolation import serve; serve()",
               str(self.memory_mb or 0), *self.preload]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      env=env, start_new_session=True, close_fds=True)
        self.restarts += 1
        try:  # the child says "ready" once its preloads are imported
            _read_exact(self._proc.stdout.fileno(), 1, time.monotonic() + _SPAWN_TIMEOUT_S)
        except (WorkerTimeout, EOFError):
            tail = self._stderr_tail()
            self._kill()
            raise WorkerError(f"child process failed to start (preload {list(self.preload)}): {tail}") from None
        return self._proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def _stderr_tail(self, limit: int = 2000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - limit))
        return self._stderr.read().decode(errors="replace").strip()


_shared: dict[str, TimedWorkerProcess] = {}
_shared_lock = threading.Lock()


def shared_worker(name: str, preload: tuple[str, ...] = (), memory_mb: int | None = None) -> TimedWorkerProcess:
    """The process-wide worker called `name` (one child per name per process), created lazily."""
    with _shared_lock:
        if name not in _shared:
            _shared[name] = TimedWorkerProcess(preload=preload, memory_mb=memory_mb)
        return _shared[name]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks, got = [], 0
    while got < n:
        remaining = None if deadline == float("inf") else deadline - time.monotonic()
        if remaining is not None and (remaining <= 0 or not select.select([fd], [], [], remaining)[0]):
            raise WorkerTimeout()
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError()
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def serve() -> None:
    """The child's loop: read (func, args, timeout) requests from stdin, answer on the original stdout."""
    channel = os.dup(1)
    os.dup2(2, 1)  # anything the called code prints goes to stderr, not into the protocol
    memory_mb, preload = int(sys.argv[1]), sys.argv[2:]
    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    for module in preload:
        importlib.import_module(module)
    os.write(channel, b"R")
    stdin = sys.stdin.buffer.raw.fileno()
    while True:
        try:
            (n,) = _HEADER.unpack(_read_exact(stdin, _HEADER.size, float("inf")))
            func, args, timeout_s = pickle.loads(_read_exact(stdin, n, float("inf")))
        except EOFError:
            return  # the parent closed the pipe (or died)
        _cap_cpu_time(timeout_s)
        try:
            module, name = func.split(":")
            answer = ("ok", getattr(importlib.import_module(module), name)(*args))
        except BaseException as e:  # noqa: BLE001 - report every failure to the parent
            answer = ("err", f"{type(e).__name__}: {e}")
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001
            data = pickle.dumps(("err", f"result of {func} is not picklable: {e}"))
        _write_all(channel, _HEADER.pack(len(data)) + data)


def _cap_cpu_time(timeout_s: float) -> None:
    """SIGXCPU kills this child if the call uses more CPU than its deadline allows on all cores
    (a backstop for when the parent is gone and cannot kill it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + timeout_s * (os.cpu_count() or 1)) + 2
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or soft <= hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
