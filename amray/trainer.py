"""The driver: the GRPO loop of AM-Thinking-v1, one step at a time.

    grpo = GRPO(cfg, cluster, sampler)
    rollout, metrics = grpo.step()                         # what run_grpo loops over
    rollout, metrics = grpo_step(cfg, cluster, prompts)    # one on-policy step on given prompts
    result = run_grpo(cfg, cluster, sampler, logger, evals)

Pipelines (grpo.pipeline, grpo.max_staleness): `stream` trains each group as soon as it is scored
while the others generate, `sync` generates everything first; both are strictly on-policy (one
optimizer update per batch; grpo.updates_per_batch=k splits it into k, PPO-style). With
max_staleness=k >= 1 the engines generate the next k steps' rollouts while a step trains
(samples at most k weight versions old, importance-corrected).
(SFT warm start: amray/sft.py; evaluation tasks: amray/evaluation/harness.py.)
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray

from amray import checkpoint
from amray.batch import Group, Prompt, Rollout, passed
from amray.cluster import Cluster
from amray.config import Config
from amray.evaluation.harness import BenchmarkTask, evaluate_benchmarks
from amray.grpo import GRPOLoss, rollout_advantages
from amray.ledger import record_step
from amray.metrics import MetricsLogger
from amray.prompts import PromptSampler
from amray.rollout import RolloutStream
from amray.timing import PhaseTimer


class GRPO:
    """What outlives one GRPO step: the rollouts in flight (the asynchronous mode launches up to
    grpo.max_staleness steps ahead), where the prompt sampler stood before each launched step, and
    the step count."""

    def __init__(self, cfg: Config, cluster: Cluster, sampler: PromptSampler | None = None, step: int = 0) -> None:
        self.cfg, self.cluster, self.sampler, self.steps = cfg, cluster, sampler, step
        self.rollouts = RolloutStream(cluster.engines, cluster.rewards)
        self.sampler_before: dict[int, dict] = {}  # step -> sampler state before its prompts were drawn
        self.sampling = cluster.engines.sampling()
        self.error_steps = 0  # steps in a row whose every reward was an error (check_rewards)

    def step(self, prompts: list[Prompt] | None = None) -> tuple[Rollout, dict[str, float]]:
        """Generate (streamed, each sample scored as it lands) -> group advantages -> one update
        -> sync weights. Returns the step's rollout and its metrics."""
        g, timer = self.cfg.grpo, PhaseTimer()
        self.steps += 1
        with timer("step"):
            self._launch(self.steps, prompts)
            for ahead in range(self.steps + 1, self.steps + g.max_staleness + 1):
                self._launch(ahead)
            loss = GRPOLoss(g.clip_eps_low, g.clip_eps_high, g.kl_coef, self.sampling["temperature"],
                            is_cap=g.is_truncation if g.max_staleness or g.updates_per_batch > 1 else 0.0)
            update = Update(self.cluster.learners, loss, self.cfg, streamed=g.pipeline == "stream",
                            groups=self.rollouts.groups(str(self.steps)))
            rollout = self.rollouts.collect(str(self.steps), on_group=update.add)
            staleness = self._check_staleness(rollout)
            with timer("train"):
                train = update.finish(self.rollouts)
            with timer("sync"):
                sync = self.cluster.sync_weights()
        metrics = step_metrics(rollout, rollout.flat(update.advantages), train, {**timer.seconds, **update.timing})
        metrics.update(staleness, **sync_metrics(sync), **mode_metrics(self.cfg),
                       weight_version=self.cluster.weight_version, **{"data/prompts_hash": prompts_hash(rollout)})
        return rollout, metrics

    def _launch(self, step: int, prompts: list[Prompt] | None = None) -> None:
        if self.rollouts.launched(str(step)):
            return
        if prompts is None:
            self.sampler_before[step] = self.sampler.state()
            prompts = self.sampler.next(self.cfg.grpo.prompts_per_step)
        self.rollouts.launch(str(step), prompts, self.cfg.grpo.samples_per_prompt, self.sampling)

    def _check_staleness(self, rollout: Rollout) -> dict[str, float]:
        """Every sample at most grpo.max_staleness weight versions behind the learner."""
        ages = np.array([self.cluster.weight_version - s.weight_version for s in rollout.samples])
        if len(ages) and ages.max() > self.cfg.grpo.max_staleness:
            raise RuntimeError(f"a sample is {ages.max()} weight versions old, grpo.max_staleness is "
                               f"{self.cfg.grpo.max_staleness}")
        return {"async/staleness_mean": float(ages.mean()) if len(ages) else 0.0,
                "async/staleness_max": float(ages.max()) if len(ages) else 0.0}


class Update:
    """A step's optimizer update(s). Streamed: each group's rows go to the learners as soon as it
    is scored, gradients accumulating while other groups still generate; the step itself waits for
    the last group. Groups go at once while the learners are idle, and are gathered up to a
    micro-batch per rank while they are busy (bigger micro-batches, fewer calls). The token-mean
    stays exact: ranks add up the gradient of the summed loss and divide once by the global token
    count. With grpo.updates_per_batch=k the `groups` of the step are split into k mini-batches of
    (nearly) equal group counts, each ended by its own update (its own token-mean); streamed, in
    the order groups are scored, so which groups share a mini-batch depends on timing; `sync`, in
    prompt order."""

    def __init__(self, learners, loss: GRPOLoss, cfg: Config, streamed: bool, groups: int = 0) -> None:
        self.learners, self.loss, self.cfg, self.streamed = learners, loss, cfg, streamed
        k = max(1, min(cfg.grpo.updates_per_batch, groups))
        self.ends = [round(i * groups / k) for i in range(1, k)]  # groups after which an update comes
        self.updates: list[list[ray.ObjectRef]] = []  # each ended mini-batch's finish_update refs
        self.groups: list[Group] = []
        self.advantages: dict[str, np.ndarray] = {}
        self.buffered: list[Group] = []
        self.buffered_tokens = 0
        self.refs: list[ray.ObjectRef] = []
        self.flush_tokens = cfg.trainer.micro_batch_tokens * cfg.trainer.num_workers
        self.t_first: float | None = None
        self.timing: dict[str, float] = {}
        if streamed:
            learners.begin_update()

    def add(self, group: Group) -> None:
        g = self.cfg.grpo
        self.advantages.update(rollout_advantages(Rollout([group]), g.adv_eps, g.zero_truncated))
        self.groups.append(group)
        if self.streamed:
            self.buffered.append(group)
            prompts = 1 if self.learners.share_prompts else len(group.samples)  # copies the learners compute
            self.buffered_tokens += prompts * len(group.prompt.token_ids) + int(group.response_lengths.sum())
            if len(self.groups) in self.ends:  # a mini-batch is complete: its update, then the next begins
                self._flush()
                self.updates.append(self.learners.finish_update(wait=False))
                self.learners.begin_update()
            elif self.buffered_tokens >= self.flush_tokens or self._learners_idle():
                self._flush()

    def _learners_idle(self) -> bool:
        """Every row sent so far has been trained on (no rank has work queued)."""
        done, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=0) if self.refs else ([], [])
        return len(done) == len(self.refs)

    def _flush(self) -> None:
        if self.buffered:
            self.t_first = self.t_first or time.perf_counter()
            self.refs += self.learners.accumulate(Rollout(self.buffered).train_batch(self.advantages), self.loss)
            self.buffered, self.buffered_tokens = [], 0

    def finish(self, rollouts: RolloutStream) -> dict[str, float]:
        """The optimizer step (after the rest of the rows); other launched rollouts keep going."""
        t_end_gen = time.perf_counter()
        if self.streamed:
            overlapped = [r for r in self.refs if ray.wait([r], timeout=0)[0]]
            self._flush()
            refs = self.learners.finish_update(wait=False)
        else:
            overlapped = []
            for a, b in zip([0, *self.ends], [*self.ends, len(self.groups)]):
                self.learners.begin_update()
                self.refs += self.learners.accumulate(Rollout(self.groups[a:b]).train_batch(self.advantages), self.loss)
                self.updates.append(self.learners.finish_update(wait=False))
            refs = self.updates.pop()
        rollouts.run_while(refs + self.refs)
        seconds = ray.get(self.refs)  # every rank's forward/backward time, per call
        ranks = self.cfg.trainer.num_workers
        self.timing = {"time/train_overlapped_s": float(np.sum(ray.get(overlapped))) / ranks if overlapped else 0.0,
                       "time/train_compute_s": float(np.sum(seconds)) / ranks,
                       "time/train_after_generate_s": time.perf_counter() - t_end_gen}
        return combined([ray.get(r)[0] for r in self.updates] + [ray.get(refs)[0]])


def combined(updates: list[dict[str, float]]) -> dict[str, float]:
    """A step's training metrics from its updates' (rank 0's): token-weighted means, the tokens
    summed, the last learning rate, and how many updates there were."""
    tokens = sum(u["tokens"] for u in updates)
    means = {k: sum(u[k] * u["tokens"] for u in updates) / max(tokens, 1.0) for k in updates[0] if k not in ("tokens", "lr")}
    return {**means, "tokens": tokens, "lr": updates[-1]["lr"], "updates": float(len(updates))}


def grpo_step(cfg: Config, cluster: Cluster, prompts: list[Prompt]) -> tuple[Rollout, dict[str, float]]:
    """One strict on-policy GRPO step on `prompts` (grpo.pipeline decides stream or sync)."""
    if cfg.grpo.max_staleness:
        raise ValueError("grpo_step runs one on-policy step; the asynchronous mode draws its next steps' "
                         "prompts from a sampler: use GRPO(cfg, cluster, sampler).step()")
    return GRPO(cfg, cluster, step=cluster.weight_version).step(prompts)


@dataclass
class RunResult:
    before: dict[str, float]
    """Evaluations before the first step (of the whole run, a resumed one included)."""
    after: dict[str, float]
    """Evaluations after the last step run."""
    last_step: int
    stopped: bool = False
    """Stopped early by SIGTERM (`ray job stop`, a preemption): a checkpoint of `last_step` was written."""


def run_grpo(cfg: Config, cluster: Cluster, sampler: PromptSampler, logger: MetricsLogger,
             evals: list[BenchmarkTask] | None = None, resume: Path | None = None,
             fingerprint: dict | None = None, grpo: GRPO | None = None) -> RunResult:
    """GRPO steps up to `grpo.steps`, from the start or from checkpoint `resume`. The `evals` (the
    held-out set and benchmarks, see `evaluation.harness`) run before the first step, every
    `eval.every_steps` steps and after the last, logged as `eval/<name>/pass@1` etc. A checkpoint
    is written every `checkpoint.every_steps` steps, and when SIGTERM asks the run to stop (at the
    end of the step it is in). `grpo`: a run already under way to go on with (amray.Run's, stepped
    from a notebook); default a fresh one (`start_grpo`)."""
    g = cfg.grpo
    grpo = grpo or start_grpo(cfg, cluster, sampler)
    before = restore(cfg, cluster, grpo, resume) if resume else evaluate(cfg, cluster, evals)
    if resume:  # the engines serve the checkpoint's weights: the hash of the sync after its step
        logger.log(grpo.steps, {"resume/from_step": grpo.steps, "sync/weights_hash": cluster.engines.weights_hash},
                   advance=False)
    elif before:
        logger.log(grpo.steps, before, advance=False)
    after = before
    with StopRequest() as stop:
        for step in range(grpo.steps + 1, g.steps + 1):
            due = step == g.steps or bool(cfg.eval.every_steps and step % cfg.eval.every_steps == 0)
            _, metrics = logged_step(cfg, cluster, grpo, logger, evals if due else None)
            if due:
                after = {k: v for k, v in metrics.items() if k.startswith("eval/")}
            every = cfg.checkpoint.every_steps
            if stop.requested or (every and step % every == 0):
                save_checkpoint(cfg, cluster, grpo, before, fingerprint or {})
            if stop.requested:
                return RunResult(before, after, step, stopped=True)
    return RunResult(before, after, g.steps)


def start_grpo(cfg: Config, cluster: Cluster, sampler: PromptSampler | None) -> GRPO:
    """A fresh GRPO run: the learners' optimizer and LR schedule set for `grpo.steps` x
    `grpo.updates_per_batch` updates (warmup counted in steps too)."""
    k = cfg.grpo.updates_per_batch
    cluster.learners.configure(cfg.trainer.lr, cfg.grpo.steps * k, cfg.trainer.warmup_steps * k, cfg.trainer.min_lr_ratio)
    return GRPO(cfg, cluster, sampler)


def logged_step(cfg: Config, cluster: Cluster, grpo: GRPO, logger: MetricsLogger,
                evals: list[BenchmarkTask] | None = None,
                prompts: list[Prompt] | None = None) -> tuple[Rollout, dict[str, float]]:
    """One step as a run takes it (run_grpo's loop, amray.Run.step): the step (on `prompts`, or the
    sampler's; a dead learner rank named), its per-prompt pass rates into the ledger, `evals` after
    it, its metrics logged, and a stop when the reward has been broken for
    reward.stop_after_error_steps steps."""
    rollout, metrics = guarded(cluster, cfg, lambda: grpo.step(prompts))
    if cfg.data.ledger:  # per-prompt pass rates: the next stage's selection reads them
        record_step(cfg.data.ledger, rollout, cfg.model.path, cfg.data.ledger_stage,
                    Path(cfg.log.output_dir).name, grpo.steps)
    grpo.error_steps = grpo.error_steps + 1 if metrics["reward/error_frac"] == 1.0 else 0
    if evals:
        metrics.update(evaluate(cfg, cluster, evals))
    logger.log(grpo.steps, metrics)
    check_rewards(cfg, rollout, grpo.error_steps)
    return rollout, metrics


def save_checkpoint(cfg: Config, cluster: Cluster, grpo: GRPO, before: dict, fingerprint: dict) -> Path:
    step = grpo.steps
    driver = {"step": step, "weight_version": cluster.weight_version, "weights_hash": cluster.engines.weights_hash,
              "sampler": grpo.sampler_before.get(step + 1) or grpo.sampler.state(), "before": before,
              "fingerprint": fingerprint, "model_dir": cluster.model_dir, "train_dtype": cluster.train_dtype}
    return checkpoint.save(cluster.learners, cfg.log.output_dir, step, driver, cfg.checkpoint.keep)


def restore(cfg: Config, cluster: Cluster, grpo: GRPO, path: Path) -> dict[str, float]:
    """Continue after checkpoint `path`: the learners' model, optimizer and schedule, the prompt
    sampler, and the engines serving the checkpoint's weights (the same hash as the sync that
    followed its step) before the first rollout. Returns the run's evaluations before step 1."""
    state = checkpoint.driver_state(path)
    cluster.learners.load_checkpoint(str(path / "learner"))
    grpo.sampler.restore(state["sampler"])
    grpo.steps = state["step"]
    cluster.weight_version = state["weight_version"] - 1
    sync = cluster.sync_weights()
    if state.get("weights_hash") and sync.get("weights_hash") != state["weights_hash"]:
        raise checkpoint.ResumeError(f"{path}: the restored weights hash {sync.get('weights_hash')}, the run "
                                     f"served {state['weights_hash']} after step {state['step']}")
    print(f"resumed from {path} (step {state['step']}, weight version {cluster.weight_version})", flush=True)
    return state.get("before") or {}


def guarded(cluster: Cluster, cfg: Config, step):
    """A learner rank that dies ends the run with an error naming the rank and the last complete
    checkpoint (`checkpoint.resume=auto` continues from it)."""
    try:
        return step()
    except ray.exceptions.RayError as e:  # the dead rank, or a survivor's collective that lost its peer
        dead = cluster.learners.dead_ranks()
        if not dead:
            raise
        found = checkpoint.complete(cfg.log.output_dir)
        last = (f"the last complete checkpoint is {found[-1]}: run the same command again "
                "(checkpoint.resume=auto continues from it)") if found else \
            "there is no checkpoint to continue from (checkpoint.every_steps=0)"
        raise LearnerDied(f"learner rank {dead[0]} died ({type(e).__name__}); {last}") from e


class LearnerDied(RuntimeError):
    pass


def check_rewards(cfg: Config, rollout: Rollout, failing: int) -> None:
    """Every reward of `reward.stop_after_error_steps` steps in a row an error: the reward is
    broken, not the policy; stop rather than train on zeros."""
    limit = cfg.reward.stop_after_error_steps
    if limit and failing >= limit:
        first = next(i["error"] for i in rollout.reward_infos if "error" in i)
        raise RuntimeError(f"every reward of the last {failing} steps was an error (reward.stop_after_error_steps="
                           f"{limit}); the first of this step: {first}")


class StopRequest:
    """SIGTERM (`ray job stop`, a preemption) asks the run to stop at the end of its step."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        print("SIGTERM: stopping after this step, with a checkpoint", flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def evaluate(cfg: Config, cluster: Cluster, evals: list[BenchmarkTask] | None) -> dict[str, float]:
    """pass@1 averaged over `eval.samples` samples per problem (and pass@k, ...) of each task."""
    return evaluate_benchmarks(cluster.engines, cluster.rewards, evals, cfg.eval.samples,
                               progress=cfg.log.progress) if evals else {}


def prompts_hash(rollout: Rollout) -> str:
    """The step's prompt ids in order: equal across an interrupted and an uninterrupted run."""
    ids = "\n".join(str(g.prompt.row.get("id", "")) for g in rollout.groups)
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def step_metrics(rollout: Rollout, advantages: np.ndarray, train: dict, seconds: dict[str, float]) -> dict[str, float]:
    lengths = rollout.response_lengths
    step_s = seconds["time/step_s"]
    useful = float((advantages != 0).sum())
    return {
        "reward/mean": float(rollout.rewards.mean()),
        "reward/accuracy": float(passed(rollout.rewards).mean()),
        "reward/error_frac": float(np.mean(["error" in i for i in rollout.reward_infos])),
        "response/length_mean": float(lengths.mean()),
        "response/truncated_frac": float(rollout.truncated.mean()),
        "group/zero_advantage_frac": float((advantages == 0).mean()),
        "rollout/samples": float(len(rollout.samples)),
        "rollout/tokens_per_s": float(lengths.sum() / max(rollout.generate_s, 1e-9)),
        "rollout/logprob_mismatch": train["logprob_mismatch"],
        "fault/reward_retries": float(sum(max(0, i.get("tries", 1) - 1) for i in rollout.reward_infos)),
        "goodput/useful_samples_per_hour": useful * 3600.0 / max(step_s, 1e-9),
        "train/loss": train["loss"], "train/grad_norm": train["grad_norm"], "train/lr": train["lr"],
        "train/clip_frac": train["clip_frac"], "train/kl": train["kl"], "train/updates": train.get("updates", 1.0),
        "train/tokens_per_s": float(train["tokens"] / max(seconds.get("time/train_compute_s", seconds["time/train_s"]), 1e-9)),
        "time/generate_s": rollout.generate_s, "time/reward_s": rollout.reward_wait_s, **seconds,
        **rollout.stats, **({"async/is_clipped_frac": train["is_clipped_frac"]} if "is_clipped_frac" in train else {}),
    }


def sync_metrics(sync: dict) -> dict:
    return {"sync/weights_hash": sync.get("weights_hash", ""), "time/sync_gather_s": sync.get("sync_gather_s", 0.0)}


def mode_metrics(cfg: Config) -> dict:
    """The mode each step ran in, named in its own metrics."""
    return {"mode/pipeline": cfg.grpo.pipeline, "mode/max_staleness": cfg.grpo.max_staleness,
            "mode/dispatch": cfg.rollout.dispatch}
