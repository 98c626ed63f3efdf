"""The driver: the GRPO loop of AM-Thinking-v1, one step at a time.

    rollout, metrics = grpo_step(cfg, cluster, prompts)     # what run_grpo loops over
    before, after = run_grpo(cfg, cluster, sampler, logger, evals)

(SFT warm start: amray/sft.py; evaluation tasks: amray/evaluation/harness.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amray.batch import Prompt, Rollout, passed
from amray.cluster import Cluster
from amray.config import Config
from amray.evaluation.harness import BenchmarkTask, evaluate_benchmarks
from amray.grpo import GRPOLoss, rollout_advantages
from amray.ledger import record_rollout
from amray.metrics import MetricsLogger
from amray.prompts import PromptSampler
from amray.rollout import generate_and_score
from amray.timing import PhaseTimer


def grpo_step(cfg: Config, cluster: Cluster, prompts: list[Prompt]) -> tuple[Rollout, dict[str, float]]:
    """Strict on-policy GRPO: generate (streamed, each sample scored as it lands) -> group
    advantages -> one update -> sync weights. Returns the step's rollout and its metrics."""
    g, timer = cfg.grpo, PhaseTimer()
    sampling = cluster.engines.sampling()
    with timer("step"):
        rollout = generate_and_score(cluster.engines, cluster.rewards, prompts, g.samples_per_prompt, sampling)
        advantages = rollout_advantages(rollout, g.adv_eps, g.zero_truncated)
        loss = GRPOLoss(g.clip_eps_low, g.clip_eps_high, g.kl_coef, sampling["temperature"])
        with timer("train"):
            train = cluster.learners.train_step(rollout.train_batch(advantages), loss)
        with timer("sync"):
            cluster.sync_weights()
    metrics = step_metrics(rollout, rollout.flat(advantages), train, timer.seconds)
    return rollout, {**metrics, "weight_version": cluster.weight_version}


def run_grpo(cfg: Config, cluster: Cluster, sampler: PromptSampler, logger: MetricsLogger,
             evals: list[BenchmarkTask] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """`grpo.steps` GRPO steps. The `evals` (the held-out set and benchmarks, see
    `evaluation.harness`) run before the first step, every `eval.every_steps` steps and after the
    last, logged as `eval/<name>/pass@1` etc. Returns the evaluations before and after."""
    g = cfg.grpo
    cluster.learners.configure(cfg.trainer.lr, g.steps, cfg.trainer.warmup_steps, cfg.trainer.min_lr_ratio)
    before = after = evaluate(cfg, cluster, evals)
    if before:
        logger.log(0, before, advance=False)
    for step in range(1, g.steps + 1):
        rollout, metrics = grpo_step(cfg, cluster, sampler.next(g.prompts_per_step))
        if cfg.data.ledger:  # per-prompt pass rates: the next stage's selection reads them
            record_rollout(cfg.data.ledger, rollout, cfg.model.path, rollout.samples[0].weight_version,
                           cfg.data.ledger_stage, Path(cfg.log.output_dir).name)
        if step == g.steps or (cfg.eval.every_steps and step % cfg.eval.every_steps == 0):
            metrics.update(after := evaluate(cfg, cluster, evals))
        logger.log(step, metrics)
    return before, after


def evaluate(cfg: Config, cluster: Cluster, evals: list[BenchmarkTask] | None) -> dict[str, float]:
    """pass@1 averaged over `eval.samples` samples per problem (and pass@k, ...) of each task."""
    return evaluate_benchmarks(cluster.engines, cluster.rewards, evals, cfg.eval.samples) if evals else {}


def step_metrics(rollout: Rollout, advantages: np.ndarray, train: dict, seconds: dict[str, float]) -> dict[str, float]:
    lengths = rollout.response_lengths
    return {
        "reward/mean": float(rollout.rewards.mean()),
        "reward/accuracy": float(passed(rollout.rewards).mean()),
        "response/length_mean": float(lengths.mean()),
        "response/truncated_frac": float(rollout.truncated.mean()),
        "group/zero_advantage_frac": float((advantages == 0).mean()),
        "rollout/tokens_per_s": float(lengths.sum() / max(rollout.generate_s, 1e-9)),
        "rollout/logprob_mismatch": train["logprob_mismatch"],
        "train/loss": train["loss"], "train/grad_norm": train["grad_norm"], "train/lr": train["lr"],
        "train/clip_frac": train["clip_frac"], "train/kl": train["kl"],
        "train/tokens_per_s": float(train["tokens"] / max(seconds["time/train_s"], 1e-9)),
        "time/generate_s": rollout.generate_s, "time/reward_s": rollout.reward_wait_s, **seconds,
    }
