"""Reward settings: one typed section of the run config (`reward.*`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from amray.configtree import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt


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
    """Size of each writable filesystem in the sandbox: its private /tmp and /dev/shm (tmpfs each)."""
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
    """How `chat` rows are scored: a served LLM judge (`endpoint`), a local reward model or a local judge."""

    endpoint: str = ""
    """Base URL of an OpenAI-compatible server whose model judges chat rows, e.g. http://localhost:8000/v1
    (`vllm serve`). Set, it replaces the local model (`mode` and `model_path` are not used): the judge
    answers {"helpfulness": s, "correctness": s, "coherence": s} on the score_min..score_max scale
    and the reward is their mean mapped to [0, 1]. The row stays within reward.timeout_s."""
    endpoint_model: str = ""
    """Model name at `endpoint`; empty: the server's only model."""
    api_key_env: str = ""
    """Environment variable holding the endpoint's API key (e.g. OPENAI_API_KEY); empty: none sent."""
    timeout_s: float = 60.0
    """Bound on one judge request (the row as a whole is bounded by reward.timeout_s)."""
    retries: int = 2
    """Further judge requests after a timeout, connection error, 429 or 5xx (time allowing)."""
    extra_body: dict = field(default_factory=dict)
    """Extra request fields, e.g. {chat_template_kwargs: {enable_thinking: false}}; one named
    `response_format` replaces the JSON schema amray sends."""
    mode: Literal["reward_model", "judge"] = "reward_model"
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
    """Tokens the judge may write before its verdict (a served reasoning judge needs more)."""
    judge_rubric: str = ""
    """Judge prompt template with {prompt} and {response} (and, served, {score_min} {score_max});
    empty means the built-in rubric of the mode."""
    device: str = "cpu"
    """Torch device for the reward model."""

    def validate(self) -> list[tuple[str, str]]:
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            return [("endpoint", f"{self.endpoint!r} is not an http(s) URL, e.g. http://localhost:8000/v1")]
        if not isinstance(self.extra_body, dict):
            return [("extra_body", f"expected a mapping of request fields, got {self.extra_body!r}")]
        if self.timeout_s <= 0:
            return [("timeout_s", f"must be > 0, got {self.timeout_s}")]
        if self.retries < 0:
            return [("retries", f"must be >= 0, got {self.retries}")]
        return []


@dataclass
class RewardConfig:
    num_workers: PositiveInt = 2
    """Reward worker actors in the pool; a hung row blocks one of them for at most timeout_s."""
    worker_num_cpus: NonNegativeFloat = 0.1
    """Ray CPUs reserved per worker actor (small: workers mostly wait on child processes)."""
    timeout_s: float = 10.0
    """Hard wall-clock bound on scoring one row; past it the row gets reward 0 and `error`."""
    max_tries: PositiveInt = 3
    """Tries of a row whose worker died or hung (each on a fresh worker); then reward 0 with the error."""
    hang_grace_s: PositiveFloat = 60.0
    """A worker that has not answered a row within timeout_s + this is declared hung (killed,
    replaced, the row tried elsewhere); covers a cold worker starting its scoring child."""
    custom: str = ""
    """A reward function of your own, `path/to/file.py:fn` or `package.module:fn`: fn(row, response)
    returns a float (or a float and an info dict); it scores rows whose source is `custom_source`,
    time-bounded like the built-in sources."""
    custom_source: str = "custom"
    """The `source` of the rows `custom` scores."""
    stop_after_error_steps: NonNegativeInt = 3
    """Stop the run when every reward of this many steps in a row is an error (a broken reward
    trains on zeros); 0: never."""
    strip_thinking: bool = True
    """Score only the final answer: the text after the last `</think>` (a response that never
    closes its `<think>` has no answer and scores 0)."""
    math_memory_mb: int = 4096
    """Address-space limit of the math scoring child process, MiB."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Limits of the code sandbox (`code` rows)."""
    chat: ChatRewardConfig = field(default_factory=ChatRewardConfig)
    """Reward model or judge for `chat` rows."""
