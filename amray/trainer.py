"""The driver: SFT warm start, held-out evaluation, and the GRPO loop of AM-Thinking-v1."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from amray.cluster import Cluster
from amray.config import Config
from amray.evaluation.harness import BenchmarkTask, evaluate_benchmarks
from amray.evaluation.report import pass_stats
from amray.grpo import group_advantages
from amray.ledger import record_rollout
from amray.learner import LearnerGroup, TrainBatch
from amray.metrics import MetricsLogger
from amray.prompts import PromptSampler
from amray.rollout import Prompt, Rollout, generate_and_score


def run_grpo(cfg: Config, cluster: Cluster, sampler: PromptSampler, logger: MetricsLogger,
             eval_prompts: list[Prompt] | None = None, benchmarks: list[BenchmarkTask] | None = None) -> None:
    """Strict on-policy GRPO: sample -> generate (streamed, scored as samples land) ->
    group advantages -> one update -> sync weights -> log. Every `eval.every_steps` steps the
    held-out prompts are evaluated, and the `benchmarks` (prepared by `evaluation.harness.prepare_tasks`)
    are run and logged as `eval/<benchmark>/pass@1` etc.; the benchmarks run after the last step too."""
    g = cfg.grpo
    sampling = cluster.engines.sampling()
    cluster.learners.configure(cfg.trainer.lr, g.steps, cfg.trainer.warmup_steps, cfg.trainer.min_lr_ratio)
    for step in range(1, g.steps + 1):
        t0 = time.perf_counter()
        prompts = sampler.next(g.prompts_per_step)
        rollout = generate_and_score(cluster.engines, cluster.rewards, prompts, g.samples_per_prompt, sampling)
        if cfg.data.ledger:  # per-prompt pass rates: the next stage's selection reads them
            record_rollout(cfg.data.ledger, rollout, cfg.model.path, cluster.weight_version, cfg.data.ledger_stage,
                           Path(cfg.log.output_dir).name)
        advantages = group_advantages(torch.from_numpy(rollout.rewards), g.samples_per_prompt,
                                      torch.from_numpy(rollout.truncated), g.adv_eps, g.zero_truncated).numpy()
        t1 = time.perf_counter()
        train = cluster.learners.train_step(rollout.train_batch(advantages), "grpo", sampling["temperature"])
        t2 = time.perf_counter()
        sync = cluster.sync_weights()
        metrics = step_metrics(rollout, advantages, train, sync, t1 - t0, t2 - t1, time.perf_counter() - t0)
        metrics["weight_version"] = cluster.weight_version
        due = bool(cfg.eval.every_steps) and step % cfg.eval.every_steps == 0
        if eval_prompts and due and step != g.steps:  # the caller evaluates after the last step
            metrics.update({f"eval/{k}": v for k, v in evaluate(cfg, cluster, eval_prompts).items()})
        if benchmarks and (due or step == g.steps):
            metrics.update(evaluate_benchmarks(cluster.engines, cluster.rewards, benchmarks, cfg.eval.samples))
        logger.log(step, metrics)


def step_metrics(rollout: Rollout, advantages: np.ndarray, train: dict, sync: dict,
                 rollout_s: float, train_s: float, step_s: float) -> dict[str, float]:
    lengths = rollout.response_lengths
    return {
        "reward/mean": float(rollout.rewards.mean()),
        "reward/accuracy": float((rollout.rewards >= 1.0).mean()),
        "response/length_mean": float(lengths.mean()),
        "response/truncated_frac": float(rollout.truncated.mean()),
        "group/zero_advantage_frac": float((advantages == 0).mean()),
        "rollout/tokens_per_s": float(lengths.sum() / max(rollout.generate_s, 1e-9)),
        "rollout/logprob_mismatch": train["logprob_mismatch"],
        "train/loss": train["loss"], "train/grad_norm": train["grad_norm"], "train/lr": train["lr"],
        "train/clip_frac": train["clip_frac"], "train/kl": train["kl"],
        "train/tokens_per_s": float(train["tokens"] / max(train_s, 1e-9)),
        "time/generate_s": rollout.generate_s, "time/reward_s": rollout.reward_wait_s,
        "time/train_s": train_s, "time/sync_s": sync["sync_s"], "time/step_s": step_s,
    }


def evaluate(cfg: Config, cluster: Cluster, prompts: list[Prompt]) -> dict[str, float]:
    """pass@1 averaged over k samples per problem (and pass@k), through the engines."""
    e = cfg.eval
    if e.limit:
        prompts = prompts[: e.limit]
    sampling = cluster.engines.sampling(e.temperature, e.top_p, e.max_tokens)
    rollout = generate_and_score(cluster.engines, cluster.rewards, prompts, e.samples, sampling)
    accuracy, stderr, pass_k = pass_stats((rollout.rewards >= 1.0).reshape(len(prompts), e.samples))
    return {"accuracy": accuracy, f"pass@{e.samples}": pass_k, "accuracy_stderr": stderr,
            "problems": float(len(prompts)), "response_length": float(rollout.response_lengths.mean()),
            "truncated_frac": float(rollout.truncated.mean())}


def sft_epochs(cfg: Config, learners: LearnerGroup, data: TrainBatch, logger: MetricsLogger | None = None) -> list[float]:
    """Chat SFT on assistant tokens (shuffled epochs, one update per batch); returns the losses."""
    s = cfg.sft
    rng = np.random.default_rng(cfg.data.shuffle_seed)
    steps_per_epoch = max(1, len(data) // s.batch_size)
    learners.configure(s.lr, s.epochs * steps_per_epoch, s.warmup_steps, s.min_lr_ratio)
    losses = []
    for epoch in range(s.epochs):
        order = rng.permutation(len(data))
        for k in range(steps_per_epoch):
            idx = order[k * s.batch_size:(k + 1) * s.batch_size].tolist()
            m = learners.train_step(data.select(idx), "sft")
            losses.append(m["loss"])
            if logger is not None:
                logger.log(len(losses), {"sft/loss": m["loss"], "sft/epoch": epoch, "sft/lr": m["lr"]}, advance=False)
    return losses


def run_sft(cfg: Config, cluster: Cluster, data: TrainBatch, logger: MetricsLogger | None = None) -> list[float]:
    """SFT warm start on the cluster's learners, then sync the result into the engines."""
    losses = sft_epochs(cfg, cluster.learners, data, logger)
    cluster.sync_weights()
    return losses
