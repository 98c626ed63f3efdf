"""What a row leaves behind (issue 12, defects 5 and 6) and what it may write (tmpfs sizes).

A uid slot must be clean after every row: its processes count against RLIMIT_NPROC of the next row
in that slot (the probe's leaked sleepers made a correct threaded program fail three times in three).
The processes "left behind" here are started by the test as the slot's uid, outside any sandbox, so
that only the per-uid kill can reach them; a thread of the test reaps each one (as bwrap would).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from amray.rewards import RewardConfig, score_row
from amray.rewards.config import SandboxConfig
from amray.rewards.sandbox import Sandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (apt-get install bubblewrap)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="uid slots need root (the sandbox drops to uid_base + slot)")

SLOTS = SandboxConfig(uid_base=61000, uid_slots=2, test_timeout_s=5.0, memory_mb=512)  # apart from other tests' uids


def processes_of(uid: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if int(line.split()[0]) == uid]


def start_as(uid: int, n: int, reap: bool = True) -> list[subprocess.Popen]:
    """`n` sleepers running as `uid` on the host (once this returns); reaped by a thread when they die,
    unless not `reap`."""
    procs = [subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "600"])
             for _ in range(n)]
    deadline = time.monotonic() + 5
    while len({line.split()[1] for line in processes_of(uid)} & {str(p.pid) for p in procs}) < n:
        assert time.monotonic() < deadline, f"setpriv never became uid {uid}"
        time.sleep(0.01)
    for proc in procs if reap else ():
        threading.Thread(target=proc.wait, daemon=True).start()
    return procs


def zombie_of(uid: int) -> subprocess.Popen:
    """A dead process of `uid` that nobody reaps yet: it holds a slot of the uid's process quota."""
    proc, = start_as(uid, 1, reap=False)
    os.kill(proc.pid, signal.SIGKILL)
    return proc


@needs_root
def test_kill_all_kills_every_process_of_the_slot_uid() -> None:
    # defect 5: `kill -s KILL -1` through dash killed nothing
    with Sandbox(SLOTS) as box:
        sleepers = start_as(box.uid, 3)
        box.kill_all()
        for proc in sleepers:
            assert proc.wait(timeout=2) == -signal.SIGKILL
        assert processes_of(box.uid) == []


@needs_root
def test_nothing_a_row_leaves_behind_outlives_it() -> None:
    # defect 6, the probe's case: 60 processes left in a slot, then a correct threaded program there
    with Sandbox(SLOTS) as box:
        uid = box.uid
        start_as(uid, 60)
    assert processes_of(uid) == []
    threaded = ("import threading\nresults = []\nthreads = [threading.Thread(target=results.append, args=(i,)) for i in range(16)]\n"
                "for t in threads: t.start()\nfor t in threads: t.join()\nprint(len(results))")
    row = {"id": "threads", "source": "code", "language": "python", "response": f"```python\n{threaded}\n```",
           "tests": {"stdin_stdout": [{"input": "", "output": "16\n"}]}}
    for _ in range(3):
        result = score_row(row, RewardConfig(timeout_s=10.0, sandbox=SLOTS))
        assert result.reward == 1.0, result.info


@needs_root
def test_a_slot_that_cannot_be_proven_clean_is_retired_for_good() -> None:
    config = SandboxConfig(uid_base=61100, uid_slots=3)  # slots retired here stay retired in this process
    zombies = [zombie_of(config.uid_base)]  # found unclean before use
    try:
        with Sandbox(config) as box:
            assert box.uid == config.uid_base + 1
            zombies.append(zombie_of(box.uid))  # left unclean at the end of the row
        assert box.retired
        for proc in zombies:
            proc.wait()  # the uids are clean now, but a retired slot is never trusted again
        with Sandbox(config) as box:
            assert box.uid == config.uid_base + 2
    finally:
        for proc in zombies:
            proc.wait()


def test_writable_filesystems_are_bounded_without_a_memory_cgroup() -> None:
    # /dev/shm, /dev and a nested user namespace's own tmpfs were bounded only by the cgroup-v1 memory
    # limit (1.5 GB written), which cgroup-v2 hosts do not have. Each must hold at most tmp_size_mb.
    config = SandboxConfig(tmp_size_mb=8, file_size_mb=64, cgroup_memory_mb=0, uid_base=61000, uid_slots=2)
    fill = ("n=0; while [ $n -lt 24 ] && head -c 1048576 /dev/zero > \"$1/fill$n\" 2>/dev/null; do n=$((n+1)); done; "
            "echo \"$2 $n\"")  # MiB written to directory $1, reported as $2
    script = (f"fill() {{ {fill}; }}; fill /tmp tmp; fill /dev/shm shm; fill /dev dev; "
              f"unshare -Urm sh -c 'mount -t tmpfs none /tmp && {fill}' - /tmp nested 2>/dev/null || echo 'nested 0'")
    with Sandbox(config) as box:
        result = box.run(["/bin/sh", "-c", script], timeout_s=20)
    written = dict(line.split() for line in result.stdout.decode().splitlines())
    assert set(written) == {"tmp", "shm", "dev", "nested"}, result
    assert int(written["tmp"]) >= 4 and int(written["shm"]) >= 4, result  # the filesystems that exist are usable...
    assert all(int(mb) <= config.tmp_size_mb for mb in written.values()), written  # ...and none holds more


@needs_root
def test_a_sandbox_closes_whatever_its_caller_left_running() -> None:
    # defect 2 left a sandbox alive because the caller raised before closing it
    with Sandbox(SLOTS) as box:
        proc = box.spawn([SLOTS.python, "-c", "import time; time.sleep(600)"])
        uid = box.uid
    assert proc.returncode is not None and not box.retired
    assert processes_of(uid) == []
