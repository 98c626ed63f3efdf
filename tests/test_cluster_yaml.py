"""cluster.yaml as `ray up` would take it: Ray's own validation, what `python -m amray.clusterfile`
checks beyond it, its start commands run (against a stub `ray`) to see what they start, and its
setup commands run for real on this machine into a fresh venv (the CPU variant of the same script)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from amray.clusterfile import copy_problems, gpu_problems, problems, ray_prepared, token_problems

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
RAW = yaml.safe_load(CLUSTER.read_text())
GPU_CONFIGS = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if "num_gpus" in p.read_text()]


def prepared(raw: dict | None = None) -> dict:
    return ray_prepared(raw if raw is not None else RAW)


def with_token(home: Path) -> Path:
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    (home / ".ray" / "auth_token").write_text("0" * 64)
    return home


def test_ray_validates_the_file() -> None:
    config = prepared()
    assert config["head_node_type"] == "head" and config["auth"]["ssh_user"] == "ubuntu"


def test_the_file_ships_no_ami_of_its_own_and_the_check_names_what_to_set(tmp_path, monkeypatch) -> None:
    """An AMI id exists in one region only, and none can be verified from here: the file ships a
    placeholder (one, shared by every node type: the same Python everywhere) that the check refuses."""
    monkeypatch.setenv("HOME", str(with_token(tmp_path)))
    monkeypatch.chdir(ROOT)
    images = {node["node_config"]["ImageId"] for node in RAW["available_node_types"].values()}
    assert images == {"ami-SET-ME"}
    found = problems(CLUSTER)
    assert len(found) == 2 and all("ImageId is 'ami-SET-ME', not an AMI id" in p for p in found)
    ready = tmp_path / "cluster.yaml"
    ready.write_text(CLUSTER.read_text().replace("ami-SET-ME", "ami-0123456789abcdef0"))
    assert problems(ready, GPU_CONFIGS) == []
    mixed = copy.deepcopy(RAW)
    mixed["available_node_types"]["head"]["node_config"]["ImageId"] = "ami-0123456789abcdef0"
    mixed["available_node_types"]["gpu_worker"]["node_config"]["ImageId"] = "ami-0fedcba9876543210"
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(mixed))
    assert any("different images" in p for p in problems(tmp_path / "mixed.yaml"))


def test_gpu_workers_fit_every_shipped_gpu_config() -> None:
    config = prepared()
    assert len(GPU_CONFIGS) >= 3
    for path in GPU_CONFIGS:
        assert gpu_problems(config, path) == [], path.name
    half = copy.deepcopy(RAW)  # what the file had: 8 workers x 8 GPUs, half of the paper's 128
    half["max_workers"] = half["available_node_types"]["gpu_worker"]["max_workers"] = 8
    found = gpu_problems(prepared(half), ROOT / "configs" / "am_thinking_32b_stage1.yaml")
    assert found and "asks for 128 GPUs" in found[0] and "at most 64" in found[0]


def test_the_checkout_is_copied_as_git_sees_it(monkeypatch) -> None:
    config = prepared()
    assert ".gitignore" in config["rsync_filter"] and config["file_mounts"]["/home/ubuntu/amray"] == "."
    if (ROOT / ".git").exists() and shutil.which("git"):  # the filter keeps what git ignores off the nodes
        assert subprocess.run(["git", "check-ignore", "-q", ".venv"], cwd=ROOT).returncode == 0
    unfiltered = {**config, "rsync_filter": []}
    monkeypatch.chdir(ROOT)  # `.` in file_mounts is where `ray up` runs
    assert copy_problems(unfiltered) and "local .venv" in copy_problems(unfiltered)[0]


def test_the_token_every_node_needs_is_copied_from_here(tmp_path, monkeypatch) -> None:
    config = prepared()
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert "ray get-auth-token --generate" in token_problems(config)[0]
    with_token(tmp_path)
    assert token_problems(config) == []
    assert "copies no token" in token_problems({**config, "file_mounts": {"/home/ubuntu/amray": "."}})[0]


def run_start_commands(commands: list[str], tmp_path: Path) -> list[str]:
    """Run start commands as the node's shell would, with stub `ray` and `python` in the venv and a
    tripwire `ray` on the system PATH; returns what each `ray` call saw."""
    home, log = tmp_path / "home", tmp_path / "calls.log"
    venv_bin, system = home / "amray-venv" / "bin", tmp_path / "system"
    for d in (venv_bin, system):
        d.mkdir(parents=True, exist_ok=True)
    stub = '#!/bin/bash\necho "{who} $* | PATH=$PATH | RAY_AUTH_MODE=${{RAY_AUTH_MODE-}} | python=$(command -v python)" >> "$LOG"\n'
    for path, who in ((venv_bin / "ray", "venv"), (system / "ray", "SYSTEM"), (venv_bin / "python", "venv-python")):
        path.write_text(stub.format(who=who))
        path.chmod(0o755)
    env = {"HOME": str(home), "LOG": str(log), "RAY_HEAD_IP": "10.0.0.1", "PATH": f"{system}:/usr/bin:/bin"}
    for command in commands:
        subprocess.run(["bash", "-c", command], env=env, check=False, timeout=30)
    return log.read_text().splitlines()


def test_start_commands_run_amrays_ray_with_its_python_first_and_token_auth(tmp_path) -> None:
    config = prepared()
    for key, start in (("head_start_ray_commands", "start --head"), ("worker_start_ray_commands", "start --address=10.0.0.1:6379")):
        calls = run_start_commands(config[key], tmp_path / key)
        venv = tmp_path / key / "home" / "amray-venv" / "bin"
        assert calls and not any(c.startswith("SYSTEM") for c in calls), calls
        started = [c for c in calls if f" {start}" in c]
        assert len(started) == 1, calls
        assert f"PATH={venv}:" in started[0], "a job's `python` must be amray's venv"
        assert f"python={venv / 'python'}" in started[0] and "RAY_AUTH_MODE=token" in started[0]


def test_gpu_install_builds_flash_attn_against_the_torch_already_installed(tmp_path) -> None:
    """install.sh --gpu, with a stub interpreter recording each pip call: torch (through vLLM) comes
    first, flash-attn is built without isolation (its build imports torch), amray after both."""
    log, venv = tmp_path / "pip.log", tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text('#!/bin/bash\necho "$*" >> "$LOG"\n')
    (venv / "bin" / "python").chmod(0o755)
    run = subprocess.run(["bash", str(ROOT / "install.sh"), "--gpu", "--venv", str(venv)], env={**os.environ, "LOG": str(log)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    calls = [line.split(" install ", 1)[1] for line in log.read_text().splitlines() if " install " in line]
    vllm = next(i for i, c in enumerate(calls) if c.split()[-1] == "vllm")
    flash = next(i for i, c in enumerate(calls) if "flash-attn" in c)
    amray = next(i for i, c in enumerate(calls) if "-e .[gpu" in c)
    assert vllm < flash < amray and "--no-build-isolation" in calls[flash]
    assert not any("torch==" in c for c in calls)  # no CPU torch pin on a GPU node


def pip_cache_dir() -> str:
    return subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True).stdout.strip()


class SetupRun:
    """The head's setup commands (cluster-wide + head-only), exactly as in the file, run on this
    machine into a fresh venv; only the variant is the CPU one (no GPU here). ~/amray is this
    checkout, as file_mounts makes it on a node. pip's own cache is reused (what a node's second
    `ray up` does). About 2 minutes of pip, a third of it waiting on the package index, so the
    suite starts it in a thread when it collects the test (conftest.py) and the test waits for it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="amray-setup-"))
        self.home = self.root / "home"
        self.runs: list[tuple[str, subprocess.CompletedProcess]] = []
        self.seconds = 0.0
        self.error: BaseException | None = None
        path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)
        self.env = {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "HOME": str(self.home), "PATH": path,
                    "PIP_CACHE_DIR": pip_cache_dir(), "PIP_NO_COMPILE": "1"}  # no .pyc compiling: not what is tested
        self.thread = threading.Thread(target=self._run, name="setup-commands", daemon=True)

    def start(self) -> SetupRun:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.home.mkdir()
            (self.home / "amray").symlink_to(ROOT)
            for conf in (".pip/pip.conf", ".config/pip/pip.conf"):  # this machine's package indexes, as a node's own
                if (Path.home() / conf).is_file():
                    (self.home / conf).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(Path.home() / conf, self.home / conf)
            start = time.monotonic()
            for command in prepared()["head_setup_commands"]:
                run = subprocess.run(["bash", "-c", command.replace("install.sh --gpu", "install.sh --cpu")], cwd=self.home,
                                     env=self.env, capture_output=True, text=True, timeout=1200)
                self.runs.append((command, run))
                if run.returncode != 0:
                    break
            self.seconds = time.monotonic() - start
        except BaseException as e:  # reported by the test
            self.error = e


EARLY: SetupRun | None = None


def start_setup_early() -> None:
    """Called by conftest.py when the suite collects the test below."""
    global EARLY
    EARLY = SetupRun().start()


def test_setup_commands_install_amray_into_a_fresh_venv() -> None:
    """The setup commands (SetupRun) land amray and the autoscaler's boto3 in that venv."""
    commands = prepared()["head_setup_commands"]
    assert sum("install.sh --gpu" in c for c in commands) == 1
    setup = EARLY or SetupRun().start()
    try:
        setup.thread.join(timeout=1500)
        assert not setup.thread.is_alive(), "the setup commands did not finish in 25 minutes"
        assert setup.error is None, repr(setup.error)
        for command, run in setup.runs:  # a failing command's own output first: it says why
            assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-3000:])
        assert [command for command, _ in setup.runs] == commands
        home = setup.home
        python = home / "amray-venv" / "bin" / "python"
        check = subprocess.run([str(python), "-c", "import amray, boto3, ray, torch, vllm; assert torch.version.cuda is None; "
                                "print(ray.__version__)"], capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, check.stderr[-3000:]
        where = subprocess.run([str(python), "-c", "import amray, boto3, sys; print(amray.__file__); print(boto3.__file__); "
                                "print(sys.prefix)"], capture_output=True, text=True, timeout=120).stdout.split()
        assert Path(where[0]).resolve() == (ROOT / "amray" / "__init__.py").resolve()  # the mounted checkout, installed editable
        assert Path(where[1]).is_relative_to(home / "amray-venv"), where  # the autoscaler's boto3: in amray's venv
        shown = subprocess.run([str(python), str(ROOT / "jobs" / "grpo.py"), "--print-config", "--output-dir", "/tmp/x"],
                               capture_output=True, text=True, timeout=300)
        assert shown.returncode == 0 and "output_dir: /tmp/x" in shown.stdout, shown.stderr[-3000:]
        print(f"setup commands: {setup.seconds:.0f}s")
    finally:
        shutil.rmtree(setup.root, ignore_errors=True)
