"""A Ray head node of a test's own, started with `ray start --head` as a user starts one, and
stopped without touching anyone else's Ray: every process of it carries its own temp dir on its
command line, so stopping kills those processes and their children, and nothing else (never
`ray stop`, which stops every Ray of the user on the machine, a shared GPU box's cluster included)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_env(directory: Path) -> dict[str, str]:
    """Token authentication (Ray 2.60) with a token of this test's own: what `export
    RAY_AUTH_MODE=token` + `ray get-auth-token --generate` give, without touching ~/.ray."""
    path = directory / "auth_token"
    path.write_text(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def without_venv_on_path(env: dict[str, str]) -> dict[str, str]:
    """The environment of a head started as `.venv/bin/ray start` from a shell that did not
    activate the venv: `python` there is not amray's."""
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p).resolve() != BIN.resolve()]
    return {**{k: v for k, v in env.items() if k != "VIRTUAL_ENV"}, "PATH": os.pathsep.join(parts)}


class LocalHead:
    """`ray start --head` in a temp dir and on ports of its own; `stop()` ends exactly its processes."""

    def __init__(self, env: dict[str, str], num_cpus: int = 8, dashboard: bool = True) -> None:
        self.env = env
        self.temp_dir = tempfile.mkdtemp(prefix="amray-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        ports = {"--node-manager-port": free_port(), "--object-manager-port": free_port(),
                 "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
                 "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
                 "--ray-client-server-port": free_port()}
        self.args = [str(BIN / "ray"), "start", "--head", f"--temp-dir={self.temp_dir}", f"--port={self.port}",
                     f"--num-cpus={num_cpus}", f"--include-dashboard={str(dashboard).lower()}",
                     f"--dashboard-port={self.dashboard_port}", "--disable-usage-stats",
                     *[f"{flag}={port}" for flag, port in ports.items()]]

    def start(self, timeout: float = 120) -> None:
        started = subprocess.run(self.args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert started.returncode == 0, started.stderr[-3000:]

    def processes(self) -> list[psutil.Process]:
        """This head's processes (their command lines name its temp dir) and all their descendants."""
        own = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(self.temp_dir in part for part in p.info["cmdline"] or []):
                    own.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found = {p.pid: p for p in own}
        for p in own:
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def alive(self) -> bool:
        for p in self.processes():
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                continue
        return False

    def stop(self, grace: float = 10) -> None:
        """SIGTERM to this head's processes (a snapshot first: children orphaned by a dying parent
        are still ours), SIGKILL to what is left after `grace` seconds."""
        victims = self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in victims:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, victims = psutil.wait_procs(victims, timeout=grace)
            if not victims:
                break
        if not victims:
            shutil.rmtree(self.temp_dir, ignore_errors=True)  # its logs and sockets


def ray_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def wait_for_jobs_api(env: dict[str, str], timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while (listed := ray_cli("job", "list", env=env)).returncode != 0:
        assert time.time() < deadline, listed.stderr[-2000:]
        time.sleep(2)
