"""Hostile programs against the code sandbox: each must score 0 AND leave the host untouched
(no process left running, no file written outside, a loopback listener never contacted).
Cases marked "issue 12" are the holes a hostile probe found: forged passes through solution-defined
builtins, oversized or malformed lines on the call channel, host-side costs without a deadline, and
dataset test code run on the host."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from amray.rewards import RewardConfig, score_row
from amray.rewards.config import SandboxConfig

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (apt-get install bubblewrap)")

UIDS = {"uid_base": 60400, "uid_slots": 8}  # apart from the default range that other runs on this host use
CONFIG = RewardConfig(timeout_s=6.0, sandbox=SandboxConfig(test_timeout_s=2.0, cpu_s=2, memory_mb=512, **UIDS))
SECRET = "amray-host-secret-7f3a"
HOST_MARK = Path("/tmp/amray-hostile-was-here")  # a path the programs try to create on the host


def sandbox_processes() -> list[str]:
    """Processes (zombies too) running as any sandbox uid, as `ps` lists them."""
    base, n = CONFIG.sandbox.uid_base, CONFIG.sandbox.uid_slots
    ps = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if base <= int(line.split()[0]) < base + n]


class Listener:
    """A loopback TCP server that counts connections (the sandbox must never reach it)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secret") / "token"
    path.write_text(SECRET)
    return path


@pytest.fixture(autouse=True)
def host_is_unaffected(listener: Listener):
    HOST_MARK.unlink(missing_ok=True)
    os.environ["AMRAY_TEST_SECRET"] = SECRET
    yield
    assert sandbox_processes() == [], "a sandboxed process outlived its row"
    assert not HOST_MARK.exists(), "a sandboxed program wrote a file on the host"
    assert listener.connections == 0, "a sandboxed program reached a host socket"


def row(code: str, tests: dict, language: str = "python") -> dict:
    return {"id": "hostile", "source": "code", "language": language, "response": f"```{language}\n{code}\n```", "tests": tests}


ADD_STDIN = {"stdin_stdout": [{"input": "2 3\n", "output": "5\n"}]}
ADD_CALL = {"functional": {"fn_name": "add", "cases": [{"args": [2, 3], "expected": 5}, {"args": [40, 2], "expected": 42}]}}
ADD_ASSERTS = {"asserts": "assert add(2, 3) == 5\nassert add(40, 2) == 42\n"}
ALWAYS_EQUAL = "class Eq:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
MAD_ASSERTS = {"asserts": "def check(candidate):\n    assert abs(candidate([1.0, 2.0, 3.0]) - 2.0/3.0) < 1e-6\n"
                          "    assert abs(candidate([1.0, 2.0, 3.0, 4.0]) - 1.0) < 1e-6\n\ncheck(mean_absolute_deviation)\n"}
# Writes `line` to every fd, the call channel's copy of stdout among them (at load, or inside a call).
WRITES_CHANNEL = "import os\nfor fd in range(3, 64):\n    try: os.write(fd, {line})\n    except OSError: pass\n"
WRITES_CHANNEL_IN_CALL = "    for fd in range(3, 64):\n        try: os.write(fd, {line})\n        except OSError: pass\n"

# (name, code, tests) for Python; {port}, {secret}, {mark} are filled in.
PYTHON_HOSTILE = [
    ("exit0_early", "import sys\nsys.exit(0)", ADD_STDIN),
    ("exit0_early_call", "import sys\nsys.exit(0)\ndef add(a, b): return a + b", ADD_CALL),
    ("os_exit_from_atexit", "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b): return None", ADD_ASSERTS),
    ("os_exit_in_call", "import os\ndef add(a, b): os._exit(0)", ADD_ASSERTS),
    ("prints_passed_markers", "print('All tests passed!')\nprint('passed')\ndef add(a, b):\n    print('PASSED')\n    return 0", ADD_ASSERTS),
    ("always_equal_functional", ALWAYS_EQUAL + "def add(a, b): return Eq()", ADD_CALL),
    ("always_equal_asserts", ALWAYS_EQUAL + "def add(a, b): return Eq()", ADD_ASSERTS),
    ("truthy_object_asserts", "class T:\n    def __bool__(self): return True\ndef is_ok(x): return T()",
     {"asserts": "assert is_ok(1)\nassert not is_ok(2)\n"}),
    ("shadows_builtins", "def set(*a): return 1\ndef sorted(*a): return 1\ndef add(a, b): return [0]",
     {"asserts": "assert set(add(2, 3)) == set([5])\nassert sorted(add(1, 1)) == [2]\n"}),
    ("forges_channel_answers", "import os\nfor fd in range(3, 64):\n    try: os.write(fd, b'{\"value\": 5}\\n' * 4)\n"
     "    except OSError: pass\ndef add(a, b): return -1", ADD_CALL),
    ("raises_systemexit_in_call", "def add(a, b): raise SystemExit(0)", ADD_CALL),
    ("kills_parent", "import os, signal\nfor pid in (os.getppid(), 1, -1):\n    try: os.kill(pid, signal.SIGKILL)\n"
     "    except OSError: pass\nprint(4)", ADD_STDIN),
    ("ignores_signals", "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
     "    signal.signal(s, signal.SIG_IGN)\nwhile True: pass", ADD_STDIN),
    ("daemonizes_child", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
     "        time.sleep(3)\n        open('{mark}', 'w').write('x')\n        time.sleep(3600)\n    os._exit(0)\nprint(4)", ADD_STDIN),
    ("fork_bomb", "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", ADD_STDIN),
    ("memory_bomb", "x = []\nwhile True: x.append(bytearray(1 << 24))", ADD_STDIN),
    ("memory_bomb_in_children", "import os\nfor _ in range(40):\n    if os.fork() == 0:\n        x = []\n"
     "        while True: x.append(bytearray(1 << 24))\nos.wait()", ADD_STDIN),
    ("thread_bomb", "import threading, time\nwhile True:\n    try: threading.Thread(target=time.sleep, args=(60,)).start()\n"
     "    except RuntimeError: pass", ADD_STDIN),
    ("infinite_loop", "while True: pass", ADD_STDIN),
    ("sleep_forever", "import time\ntime.sleep(10**6)", ADD_STDIN),
    ("sleep_forever_in_call", "import time\ndef add(a, b): time.sleep(10**6)", ADD_CALL),
    ("huge_output", "import sys\nwhile True: sys.stdout.write('x' * 65536)", ADD_STDIN),
    ("huge_output_in_call", "def add(a, b):\n    while True: print('y' * 65536)", ADD_CALL),
    ("disk_fill", "import os\nfor d in ('/tmp', '/box', '/', '/usr'):\n    try:\n        with open(d + '/fill', 'wb') as f:\n"
     "            while True: f.write(b'0' * (1 << 20))\n    except OSError: pass\nprint(4)", ADD_STDIN),
    ("deep_recursion", "import sys\nsys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1) + 1\nprint(f(0))", ADD_STDIN),
    ("network_connection", "import socket\nfor host in ('127.0.0.1', 'localhost', '::1'):\n    try:\n"
     "        s = socket.create_connection((host, {port}), timeout=1)\n        s.sendall(b'leak')\n    except OSError: pass\nprint(4)",
     ADD_STDIN),
    ("reads_host_files", "out = []\nfor p in ('{secret}', '/etc/shadow', '/etc/passwd', '/root/.bashrc', '/proc/1/environ'):\n"
     "    try: out.append(open(p).read())\n    except OSError: pass\nprint(''.join(out))",
     {"stdin_stdout": [{"input": "", "output": SECRET + "\n"}]}),
    ("reads_env_secret", "import os\nprint(os.environ.get('AMRAY_TEST_SECRET', ''))",
     {"stdin_stdout": [{"input": "", "output": SECRET + "\n"}]}),
    ("writes_host_files", "import os\nfor p in ('{mark}', '/work/amray-pwned', '/root/amray-pwned', '/usr/amray-pwned', '/box/x'):\n"
     "    try: open(p, 'w').write('x')\n    except OSError: pass\nprint(4)", ADD_STDIN),
    # issue 12, defect 1: a solution-defined builtin must not answer for the test's own expression
    ("shadows_abs_in_tolerance_check", "def abs(x): return 0\ndef mean_absolute_deviation(xs): return 7.0", MAD_ASSERTS),
    ("shadows_abs_reversed_compare", "def abs(x): return 0\ndef mad(xs): return 7.0",
     {"asserts": "assert 1e-6 > abs(mad([1.0, 2.0]) - 0.5)\n"}),
    ("shadows_len", "def len(x): return 3\ndef f(x): return []", {"asserts": "assert len(f(3)) == 3\n"}),
    ("shadows_sorted", "def sorted(x): return [1, 2, 3]\ndef f(x): return [9]", {"asserts": "assert sorted(f([3, 1, 2])) == [1, 2, 3]\n"}),
    ("shadows_round", "def round(x, n=None): return 2.5\ndef f(x): return 0", {"asserts": "assert round(f(2), 1) == 2.5\n"}),
    ("shadows_isinstance", "def isinstance(x, t): return True\ndef f(x): return 'no'", {"asserts": "assert isinstance(f(1), int)\n"}),
    ("shadows_all", "def all(x): return True\ndef f(x): return [0]", {"asserts": "assert all(f(3))\n"}),
    ("shadows_set_subset", "def set(x=()): return frozenset()\ndef f(x): return [0]", {"asserts": "assert set(f(1)) <= {1, 2}\n"}),
    ("shadows_float", "def float(x): return 0.5\ndef f(x): return 'x'", {"asserts": "assert float(f(1)) == 0.5\n"}),
    ("shadows_max_on_the_right", "def max(x): return 0\ndef f(x): return 0", {"asserts": "assert f([1, 2]) == max([1, 2])\n"}),
    # issue 12, defect 2: what the program writes on the channel is untrusted, bounded, and its own fault
    ("parser_bomb", "a = " + "1 + " * 20000 + "1\ndef add(a, b): return a + b", ADD_ASSERTS),  # so is its source
    ("deep_json_before_greeting", WRITES_CHANNEL.format(line="b'[' * 100000 + b'\\n'") + "def add(a, b): return a + b", ADD_ASSERTS),
    ("deep_json_as_answer", "import os\ndef add(a, b):\n" + WRITES_CHANNEL_IN_CALL.format(line="b'[' * 100000 + b'\\n'"), ADD_CALL),
    ("endless_line_on_channel", "import os\ndef add(a, b):\n    while True:\n        for fd in range(3, 64):\n"
     "            try: os.write(fd, b'7' * 65536)\n            except OSError: pass", ADD_CALL),
    ("non_utf8_on_channel", "import os\ndef add(a, b):\n" + WRITES_CHANNEL_IN_CALL.format(line="b'{\"value\": \"\\xff\\xfe\"}\\n'"), ADD_ASSERTS),
    ("unending_line_on_channel", "import os, time\ndef add(a, b):\n"
     + WRITES_CHANNEL_IN_CALL.format(line="b'{\"value\": 5'") + "    time.sleep(3600)", ADD_CALL),
]

CPP_HOSTILE = [
    ("cpp_infinite_loop", "int main() { volatile long x = 0; while (true) x++; }"),
    ("cpp_fork_bomb", "#include <unistd.h>\nint main() { while (true) fork(); }"),
    ("cpp_memory_bomb", "#include <vector>\n#include <cstring>\nint main() { std::vector<char*> v;\n"
     "  while (true) { char* p = new char[1 << 24]; memset(p, 1, 1 << 24); v.push_back(p); } }"),
    ("cpp_include_dev_zero", "#include </dev/zero>\nint main() { return 0; }"),
    ("cpp_huge_output", "#include <cstdio>\nint main() { while (true) puts(\"xxxxxxxxxxxxxxxxxxxxxxxx\"); }"),
    ("cpp_writes_host_file", "#include <cstdio>\nint main() { FILE* f = fopen(\"{mark}\", \"w\"); if (f) fputs(\"x\", f);\n"
     "  puts(\"4\"); }"),
]


def _fill(code: str, listener: Listener, secret_file: Path) -> str:
    return code.replace("{port}", str(listener.port)).replace("{secret}", str(secret_file)).replace("{mark}", str(HOST_MARK))


@pytest.mark.parametrize("name, code, tests", PYTHON_HOSTILE, ids=[c[0] for c in PYTHON_HOSTILE])
def test_hostile_python_gets_nothing(name: str, code: str, tests: dict, listener: Listener, secret_file: Path) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    result = score_row(row(_fill(code, listener, secret_file), tests), CONFIG)
    assert result.reward == 0.0, result.info
    assert "error" not in result.info, result.info  # judged as the program's failure, not the scorer's
    assert result.info["elapsed_s"] < CONFIG.timeout_s + 2.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10) - peak_mb < 256, "the host paid the memory"


def test_a_flood_on_the_call_channel_is_cut_at_output_bytes() -> None:
    # issue 12, defect 2: the host reads at most output_bytes of a line, then stops the program
    _, code, tests = next(case for case in PYTHON_HOSTILE if case[0] == "endless_line_on_channel")
    result = score_row(row(code, tests), CONFIG)
    assert result.info["verdict"] == "output_limit_exceeded", result.info
    assert result.info["elapsed_s"] < CONFIG.sandbox.test_timeout_s, result.info


# issue 12, defect 3: what the tests do with a returned value costs the row's time, never the host's
# (the probe held a worker for 75 s with the first case); judged under a 2 s row limit.
HOST_COSTS = [
    ("tests_sum_a_huge_range", "def count(xs): return 10**11", {"asserts": "assert sum(range(count([1, 2, 3]))) == 3\n"}),
    ("tests_repeat_a_huge_string", "def n(): return 10**9", {"asserts": "assert len('a' * n()) == 3\n"}),
    ("tests_raise_to_a_huge_power", "def n(): return 10**8", {"asserts": "assert 7 ** n() == 3\n"}),
    ("tests_recurse_deeply", "def n(): return 10**6", {"asserts": "import sys\nsys.setrecursionlimit(10**7)\nx = []\n"
                                                       "for _ in range(n()): x = [x]\nassert str(x) == '[]'\n"}),
    ("answers_a_hash_colliding_set", "import os\nM = 2**61 - 1\nANSWER = ('{\"value\": {\"__set__\": [' + ', '.join("
     "str(k * M) for k in range(1, 40000)) + ']}}\\n').encode()\ndef add(a, b):\n"
     + WRITES_CHANNEL_IN_CALL.format(line="ANSWER"), {"functional": {"fn_name": "add", "cases": [{"args": [2, 3], "expected": [5]}]}}),
]
SHORT = RewardConfig(timeout_s=2.0, sandbox=SandboxConfig(test_timeout_s=1.0, cpu_s=2, memory_mb=512, **UIDS))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name, code, tests", HOST_COSTS, ids=[c[0] for c in HOST_COSTS])
def test_what_tests_do_with_a_value_costs_the_row_not_the_host(name: str, code: str, tests: dict) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    result = score_row(row(code, tests), SHORT)
    assert result.reward == 0.0 and "error" not in result.info, result.info
    assert result.info["elapsed_s"] < SHORT.timeout_s + 1.5, result.info
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10) - peak_mb < 256, "the host paid the memory"


@pytest.mark.parametrize("name, code", CPP_HOSTILE, ids=[c[0] for c in CPP_HOSTILE])
def test_hostile_cpp_gets_nothing(name: str, code: str, listener: Listener, secret_file: Path) -> None:
    result = score_row(row(_fill(code, listener, secret_file), ADD_STDIN, "cpp"), CONFIG)
    assert result.reward == 0.0, result.info
    assert result.info["elapsed_s"] < CONFIG.timeout_s + 2.0


def test_dataset_test_code_runs_unprivileged_and_sees_nothing_of_the_host(listener: Listener, secret_file: Path) -> None:
    # issue 12, defect 4: a poisoned `tests.asserts` wrote a host file as root (it ran in the reward worker)
    poisoned = _fill("import os, socket\n"
                     "open('{mark}', 'w').write('x')\n"
                     "assert os.geteuid() != 0 and not os.path.exists('{secret}') and 'AMRAY_TEST_SECRET' not in os.environ\n"
                     "try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\nexcept OSError:\n    pass\n"
                     "assert add(2, 3) == 5\n", listener, secret_file)
    result = score_row(row("def add(a, b): return a + b", {"asserts": poisoned}), CONFIG)
    assert result.reward == 1.0, result.info  # it all ran, in a sandbox: the fixture checks the host


def test_the_same_checks_pass_an_honest_program(listener: Listener, secret_file: Path) -> None:
    # the corpus is only meaningful if the tests it uses can be passed at all
    honest = "def add(a, b): return a + b"
    for tests in (ADD_CALL, ADD_ASSERTS):
        assert score_row(row(honest, tests), CONFIG).reward == 1.0
    assert score_row(row("a, b = map(int, input().split())\nprint(a + b)", ADD_STDIN), CONFIG).reward == 1.0
    cpp = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }"
    assert score_row(row(cpp, ADD_STDIN, "cpp"), CONFIG).reward == 1.0
