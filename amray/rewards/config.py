"""Reward settings: one typed section of the run config (`reward.*`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SandboxConfig:
    """Limits for running untrusted code (bubblewrap + rlimits + an unprivileged uid)."""

    test_timeout_s: float = 6.0
    """Wall-clock limit of one stdin/stdout case, or of one call of a call-based test."""
    cpu_s: int = 5
    """RLIMIT_CPU of a run, seconds."""
    memory_mb: int = 1024
    """RLIMIT_AS of each sandboxed process, MiB (g++ gets compile_memory_mb)."""
    nproc: int = 64
    """RLIMIT_NPROC: processes + threads of the sandbox uid."""
    file_size_mb: int = 16
    """RLIMIT_FSIZE: largest file a run may write, MiB."""
    nofile: int = 64
    """RLIMIT_NOFILE: open file descriptors."""
    tmp_size_mb: int = 64
    """Size of the private writable /tmp (a tmpfs inside the sandbox)."""
    output_bytes: int = 1 << 20
    """Captured stdout/stderr per run; the rest is discarded (and the run fails)."""
    cgroup_memory_mb: int = 2048
    """Memory of all processes of one sandbox together (a cgroup-v1 memory limit; used where the
    host lets us create one, else only the per-process RLIMIT_AS holds). 0 disables."""
    python: str = "/usr/bin/python3"
    """Interpreter for Python solutions; must live under /usr (the only host tree in the sandbox)."""
    compile_timeout_s: float = 30.0
    """Wall-clock limit of one g++ compile."""
    compile_memory_mb: int = 2048
    """RLIMIT_AS of g++, MiB (cc1plus needs more than a run)."""
    uid_base: int = 60000
    """Sandboxes run as host uid uid_base + slot, one slot per concurrent sandbox."""
    uid_slots: int = 64
    """How many concurrent sandboxes (and uids) this machine allows."""
    cpp_flags: list[str] = field(default_factory=lambda: ["-O2", "-std=c++17"])
    """g++ flags for C++ solutions."""


@dataclass
class ChatRewardConfig:
    """How `chat` rows are scored: a reward model or an LLM judge."""

    mode: str = "reward_model"
    """`reward_model` (a local AutoModelForSequenceClassification) or `judge` (an LLM with a rubric)."""
    model_path: str = ""
    """Local model directory (reward model, or the judge's causal LM)."""
    labels: list[str] = field(default_factory=lambda: ["helpfulness", "correctness", "coherence"])
    """Reward-model heads to average (matched to config.id2label; AM-Thinking averages these three).
    Heads not found fall back to averaging every head."""
    max_length: int = 4096
    """Tokens of prompt + response fed to the reward model (longer inputs keep their end)."""
    score_min: float = 0.0
    """Raw score mapped to reward 0 (reward = clip((score - min) / (max - min), 0, 1))."""
    score_max: float = 4.0
    """Raw score mapped to reward 1 (HelpSteer2 attributes run 0..4)."""
    judge_max_tokens: int = 256
    """Tokens the judge may write before its verdict."""
    judge_rubric: str = ""
    """Judge prompt template with {prompt} and {response}; empty means the built-in rubric."""
    device: str = "cpu"
    """Torch device for the reward model."""


@dataclass
class RewardConfig:
    num_workers: int = 2
    """Reward worker actors in the pool; a hung row blocks one of them for at most timeout_s."""
    worker_num_cpus: float = 0.1
    """Ray CPUs reserved per worker actor (small: workers mostly wait on child processes)."""
    timeout_s: float = 10.0
    """Hard wall-clock bound on scoring one row; past it the row gets reward 0 and `error`."""
    strip_thinking: bool = True
    """Score only the final answer: the text after the last `</think>` (a response that never
    closes its `<think>` has no answer and scores 0)."""
    math_memory_mb: int = 4096
    """Address-space limit of the math scoring child process, MiB."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Limits of the code sandbox (`code` rows)."""
    chat: ChatRewardConfig = field(default_factory=ChatRewardConfig)
    """Reward model or judge for `chat` rows."""
