"""A sandbox for untrusted programs: bubblewrap, rlimits, an unprivileged uid of its own, a memory cgroup.

Layers, each closing a hole the others leave:
- bubblewrap: new user/pid/net/ipc/uts namespaces (no network, the process tree dies with its pid-1),
  no nested user namespaces (a program could mount a tmpfs of its own in one), a read-only /usr and
  nothing else of the host, a clean environment, `--die-with-parent`. The only writable filesystems
  are /tmp and /dev/shm, each a tmpfs of `tmp_size_mb`; /dev itself is read-only. So disk and memory
  written as files are bounded without a memory cgroup (cgroup-v2 hosts have none, see below).
- a host uid per concurrent sandbox (`uid_base + slot`, slots taken with flock): RLIMIT_NPROC does
  not bind root, and counts per uid, so sandboxes must not share one. After every run each process
  of that uid is killed (`kill -9 -1` as the uid); when the sandbox closes, /proc must show none left
  (zombies count: they hold the uid's process quota), else the slot is retired for good, as it is
  when it is found unclean before use. So nothing a row started can outlive it or starve a later row.
- rlimits (CPU, address space, processes, file size, open files) and a wall-clock deadline that kills
  the whole tree; captured output is bounded.
- a cgroup-v1 memory limit per slot where the host allows it (64 processes x RLIMIT_AS is too much).

    with Sandbox(cfg.sandbox) as box:
        box.write("solution.py", code)
        result = box.run(["/usr/bin/python3", "-I", "/box/solution.py"], stdin=b"1 2\n", timeout_s=6)
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amray.rewards.config import SandboxConfig

BOX = "/box"  # where the host work directory appears inside the sandbox (read-only)
_SLOT_DIR = Path(tempfile.gettempdir()) / "amray-sandbox-slots"
_CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
# `-9`, not `-s KILL -1`: dash (Debian's /bin/sh) reads that `-1` as an option and kills nothing.
_KILL = "kill -9 -1"
_CLEAN_WAIT_S = 2.0  # how long killed processes may take to be reaped before the slot is retired
_retired_slots: dict[int, int] = {}  # uid -> its lock fd, held until this process exits: never reused


class SandboxError(RuntimeError):
    """The sandbox itself could not run (bwrap missing, no free slot): not the program's fault."""


@dataclass
class RunResult:
    returncode: int | None
    """Exit status (negative: killed by that signal; None: killed at the deadline)."""
    stdout: bytes
    stderr: bytes
    timed_out: bool
    output_exceeded: bool
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.output_exceeded

    def failure(self) -> str | None:
        """Why the run failed, in words (None when it succeeded)."""
        if self.timed_out:
            return "time limit exceeded"
        if self.output_exceeded:
            return "output limit exceeded"
        if self.returncode != 0:
            tail = self.stderr[-300:].decode(errors="replace").strip()
            return f"exit status {self.returncode}" + (f": {tail}" if tail else "")
        return None


class Sandbox:
    """One slot (uid) and one host work directory, held for several runs of one row's program."""

    def __init__(self, config: SandboxConfig, slot_wait_s: float = 30.0) -> None:
        self.config = config
        self.slot_wait_s = slot_wait_s
        self.privileged = os.geteuid() == 0
        self.uid = os.geteuid()
        self.workdir: Path | None = None
        self._slot_fd: int | None = None
        self._cgroup_procs: Path | None = None
        self._procs: list[SandboxProcess] = []
        self.retired = False
        """Set on close when a process of the uid outlived every kill: the slot is never used again."""

    # --- lifetime -------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        if shutil.which("bwrap") is None:
            raise SandboxError("bubblewrap is not installed: `apt-get install -y bubblewrap`")
        if self.privileged:
            slot = self._take_slot()
            self.uid = self.config.uid_base + slot
            self._cgroup_procs = _slot_cgroup(slot, self.config.cgroup_memory_mb)
        self.workdir = Path(tempfile.mkdtemp(prefix="amray-sbx-"))
        self.workdir.chmod(0o755)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:  # whatever a caller left running (e.g. it raised midway)
            proc.stop()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._procs = []
        clean = self.kill_all()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self._slot_fd is not None:
            self.retired = not clean
            if self.retired:  # keep the flock: no sandbox of this process or another takes the uid again
                _retired_slots[self.uid] = self._slot_fd
            else:
                os.close(self._slot_fd)  # releases the flock: the uid is free again
            self._slot_fd = None

    def kill_all(self) -> bool:
        """Kill every process of this sandbox's uid (whatever it forked, daemonized or hid); False if
        one outlived every kill (a zombie nobody reaps: it still counts against RLIMIT_NPROC)."""
        return _kill_uid(self.uid) if self.privileged else True

    # --- files ----------------------------------------------------------------------------------
    def write(self, name: str, data: str | bytes) -> str:
        """Put a file into the work directory; returns its path inside the sandbox."""
        path = self.workdir / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.chmod(0o644)
        return f"{BOX}/{name}"

    def writable_dir(self, name: str) -> str:
        """A sub-directory the sandbox may write (e.g. the compiler's output); path inside."""
        path = self.workdir / name
        path.mkdir(exist_ok=True)
        if self.privileged:
            os.chown(path, self.uid, self.uid)
        else:
            path.chmod(0o777)
        return f"{BOX}/{name}"

    # --- running --------------------------------------------------------------------------------
    def command(self, argv: list[str], cpu_s: int | None = None, memory_mb: int | None = None,
                writable: tuple[str, ...] = ()) -> list[str]:
        """The full host command line that runs `argv` inside the sandbox."""
        c = self.config
        limits = [f"--cpu={cpu_s or c.cpu_s}", f"--as={(memory_mb or c.memory_mb) << 20}",
                  f"--fsize={c.file_size_mb << 20}", f"--nofile={c.nofile}", "--core=0"]
        if self.privileged:
            prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                      "prlimit", f"--nproc={c.nproc}", *limits, "--"]
            if self._cgroup_procs is not None:  # join the slot's memory cgroup before dropping root
                prefix = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self._cgroup_procs), *prefix]
        else:  # best effort without root: the uid is shared, so only the namespaces bound the tree
            prefix = ["prlimit", *limits, "--"]
        tmp_size = str(c.tmp_size_mb << 20)
        mounts = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                  "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
                  "--size", tmp_size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",  # /dev's own tmpfs has no size
                  "--size", tmp_size, "--tmpfs", "/tmp", "--ro-bind", str(self.workdir), BOX]
        for inside in writable:
            mounts += ["--bind", str(self.workdir / Path(inside).relative_to(BOX)), inside]
        bwrap = ["bwrap", "--unshare-all", *_no_nested_userns(), "--as-pid-1", "--die-with-parent", "--new-session",
                 *mounts, "--remount-ro", "/", "--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin",
                 "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8", "--"]
        return [*prefix, *bwrap, *argv]

    def spawn(self, argv: list[str], stdin: int | None = None, **kwargs: object) -> SandboxProcess:
        """Start a sandboxed process with piped stdout/stderr (and stdin unless given)."""
        info_r, info_w = os.pipe()  # bwrap reports the host pid of the sandbox's pid 1 here
        command = self.command(argv, **kwargs)
        bwrap_at = command.index("bwrap") + 1
        command[bwrap_at:bwrap_at] = ["--info-fd", str(info_w)]
        try:
            proc = SandboxProcess(command, stdin=subprocess.PIPE if stdin is None else stdin,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                  close_fds=True, pass_fds=(info_w,))
        finally:
            os.close(info_w)
        proc.info_fd = info_r
        self._procs.append(proc)
        return proc

    def run(self, argv: list[str], stdin: bytes = b"", timeout_s: float | None = None,
            **kwargs: object) -> RunResult:
        """Run to completion or the deadline; stdout/stderr captured up to `output_bytes`."""
        timeout_s = self.config.test_timeout_s if timeout_s is None else timeout_s
        input_path = self.workdir / f"stdin-{time.monotonic_ns()}"  # a file: no pipe deadlock on big inputs
        input_path.write_bytes(stdin)
        start = time.monotonic()
        with open(input_path, "rb") as stdin_file:
            proc = self.spawn(argv, stdin=stdin_file.fileno(), **kwargs)
        input_path.unlink()
        out, err, timed_out, exceeded = drain(proc, start + timeout_s, self.config.output_bytes)
        code = None if timed_out else proc.returncode
        return RunResult(code, out, err, timed_out, exceeded, round(time.monotonic() - start, 4))

    def _take_slot(self) -> int:
        _SLOT_DIR.mkdir(mode=0o700, exist_ok=True)
        deadline = time.monotonic() + self.slot_wait_s
        while True:
            for slot in range(self.config.uid_slots):
                uid = self.config.uid_base + slot
                fd = os.open(_SLOT_DIR / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                if not _kill_uid(uid):  # left by a process that died holding the slot
                    _retired_slots[uid] = fd
                    continue
                self._slot_fd = fd
                return slot
            if time.monotonic() > deadline:
                raise SandboxError(f"no free sandbox slot among {self.config.uid_slots} "
                                   f"(reward.sandbox.uid_slots) after {self.slot_wait_s:g} s")
            time.sleep(0.05)


class SandboxProcess(subprocess.Popen):
    """A running sandbox: `bwrap` (the Popen) and, inside, the program as the pid namespace's pid 1."""

    info_fd: int | None = None

    def stop(self) -> None:
        """Kill the program (pid 1 of its namespace, so the kernel kills every process in there);
        bwrap then reaps it and exits. Killing bwrap first would orphan a zombie to the host's init."""
        if self.poll() is None:  # bwrap still runs, so its child's pid cannot have been reused
            inner = self._inner_pid()
            if inner is not None:
                try:
                    os.kill(inner, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.wait(2.0)
            except subprocess.TimeoutExpired:  # setup never finished: take the whole group down
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.wait()
        if self.info_fd is not None:
            os.close(self.info_fd)
            self.info_fd = None

    def _inner_pid(self) -> int | None:
        if self.info_fd is None:
            return None
        data = b""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and select.select([self.info_fd], [], [], deadline - time.monotonic())[0]:
            chunk = os.read(self.info_fd, 4096)
            if not chunk:
                break
            data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            return None


def stop_tree(proc: subprocess.Popen) -> None:
    """Stop a sandboxed process and everything it started."""
    if isinstance(proc, SandboxProcess):
        proc.stop()
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def drain(proc: subprocess.Popen, deadline: float, limit: int) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout and stderr until exit, the deadline, or `limit` bytes; kills the tree on the last two."""
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    open_fds = set(bufs)
    timed_out = exceeded = False
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
            bufs[fd] += chunk
            if len(bufs[fd]) > limit:
                exceeded = True
        if exceeded:
            break
    if not open_fds:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # closed its pipes but keeps running
            timed_out = True
    stop_tree(proc)  # kills what still runs; always releases the process
    proc.stdout.close()
    proc.stderr.close()
    return bytes(bufs[out_fd][:limit]), bytes(bufs[err_fd][:limit]), timed_out, exceeded


def _uid_processes(uid: int) -> list[int]:
    """Pids of every process, zombies included, whose real, effective, saved or fs uid is `uid`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as f:
                status = f.read()
        except OSError:  # exited meanwhile
            continue
        uids = next((line.split()[1:] for line in status.splitlines() if line.startswith(b"Uid:")), [])
        if str(uid).encode() in uids:
            pids.append(int(entry.name))
    return pids


def _kill_uid(uid: int, timeout_s: float = _CLEAN_WAIT_S) -> bool:
    """SIGKILL every process of `uid` until /proc shows none; False if one outlives `timeout_s`.
    kill(-1) run as the uid reaches all of them, in any pid namespace. Its exit status cannot tell
    whether any was left: it succeeds whenever the host has other processes, even unsignalled ones."""
    deadline = time.monotonic() + timeout_s
    while _uid_processes(uid):
        if time.monotonic() > deadline:
            return False
        subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/bin/sh", "-c", _KILL],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        time.sleep(0.01)  # the killed are reaped by their parents
    return True


@functools.cache
def _no_nested_userns() -> tuple[str, ...]:
    """bwrap flags that forbid user namespaces inside the sandbox (bwrap >= 0.8; older ones cannot)."""
    version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.split()[-1:]
    try:
        supported = tuple(int(x) for x in version[0].split(".")[:2]) >= (0, 8)
    except (IndexError, ValueError):
        supported = False
    return ("--unshare-user", "--disable-userns") if supported else ()


def _slot_cgroup(slot: int, memory_mb: int) -> Path | None:
    """`cgroup.procs` of this slot's memory cgroup (created on first use), or None where the host's
    cgroup-v1 memory controller is not writable (then only rlimits bound memory)."""
    if memory_mb <= 0 or not _CGROUP_ROOT.is_dir():
        return None
    try:
        own = next(line.split(":", 2)[2].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.split(":", 2)[1] == "memory")
        group = _CGROUP_ROOT / own.lstrip("/") / "amray-sandbox" / f"slot-{slot}"
        group.mkdir(parents=True, exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(memory_mb << 20))
        return group / "cgroup.procs"
    except (OSError, StopIteration, IndexError):
        return None
