"""amray from Python: a run's actors brought up and driven from a notebook cell, a script or a job.

    import amray

    with amray.Run("configs/demo_cpu.yaml", ["grpo.steps=20"], output_dir="runs/nb",
                   train="train.jsonl", eval="eval.jsonl") as run:
        run.sft("chats.jsonl")                  # SFT warm start; the engines then serve its weights
        step = run.step()                       # one GRPO step: its rollout, rewards, advantages, metrics
        step.to_pandas()                        # one row per sample
        run.evaluate()                          # the held-out set (and eval.benchmarks)
        run.save("runs/nb/model")

Entering brings the actors up (vLLM engines, FSDP2 learner ranks, reward workers; Ray joined, or
started locally); leaving shuts them down, and shuts down a Ray the run started itself. Starting a
Run first closes the one this process started before and left open (a notebook cell run twice):
no actor, placement group or Ray is left behind. Rows (`train`, `eval`, `sft`: a file in any form
amray.data.records reads, or rows in memory) are checked before any actor starts.
jobs/grpo.py, jobs/sft.py and jobs/demo.py are command lines over this class.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from amray.checkpoint import ResumeError
from amray.config import Config, ConfigError
from amray.configtree import to_yaml
from amray.data.records import DataError
from amray.jobcli import CONFIG_FILE
from amray.results import SFTResult, StepResult
from amray.rewards.custom import by_value
from amray.rundata import (Rows, conversations_of, load_benchmark_problems, make_config, origin_of, prepared_sft,
                           task_rows_of)

if TYPE_CHECKING:
    import pandas

    from amray.batch import Prompt
    from amray.trainer import GRPO, RunResult

_open: Run | None = None  # the Run this process started and has not closed


class Run:
    """One run's actors and state: SFT, GRPO one step at a time (or a whole run), evaluation,
    checkpoints. `config`: a YAML path, a dict of sections, or a Config; `overrides`: dotted
    `key=value` items on top; `output_dir`: log.output_dir (metrics.jsonl, checkpoints/, model/).
    `train` / `eval` / `sft`: default data.train / data.eval / data.sft. `rewards`: {source: fn}
    custom rewards (see add_reward). `learners_only`: no engines or reward workers (an SFT run)."""

    def __init__(self, config: str | Path | dict | Config | None = None, overrides: list[str] | None = None,
                 output_dir: str | Path | None = None, *, train: Rows | None = None, eval: Rows | None = None,
                 sft: Rows | list[list[dict]] | None = None, rewards: dict[str, Callable] | None = None,
                 learners_only: bool = False) -> None:
        self.cfg = make_config(config, overrides, output_dir)
        d = self.cfg.data
        self.data = {"train": train if train is not None else d.train or None,
                     "eval": eval if eval is not None else d.eval or None,
                     "sft": sft if sft is not None else d.sft or None}
        self.learners_only = learners_only
        self.cluster = self.learners = self.tokenizer = self.heldout = self.sft_data = None
        self.rewards: dict[str, Callable] = {}
        for name, fn in (rewards or {}).items():
            self.add_reward(name, fn)
        self.model_dir = ""
        self.train_rows: list[dict] = []
        self.train_prompts: list[Prompt] = []
        self.benchmarks: list = []
        self._grpo: GRPO | None = None
        self._logger = None
        self._before: dict[str, float] = {}
        self._owns_ray = False

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.log.output_dir)

    @property
    def started(self) -> bool:
        return self.learners is not None

    @property
    def steps(self) -> int:
        """GRPO steps taken (a resumed run counts its checkpoint's)."""
        return self._grpo.steps if self._grpo is not None else 0

    # --- bringing the actors up and down ---------------------------------------------------------

    def start(self) -> Run:
        """Check the data, build the model's tokenizer and prompts, then join or start Ray and bring
        the actors up. Idempotent; closes a Run this process left open first."""
        global _open
        if self.started:
            return self
        self._prepare()  # every check that can fail, before Ray
        if _open is not None and _open is not self:
            print("amray.Run: closing the run this process started before (its actors, and its Ray)", flush=True)
            _open.close()
        import ray

        from amray.rayenv import init_ray

        self._owns_ray = not ray.is_initialized()
        _open = self
        try:
            init_ray(self.cfg)
            if self.learners_only:
                from amray.learner import LearnerGroup

                self.learners = LearnerGroup(self.model_dir, self.cfg.trainer)
            else:
                from amray.cluster import Cluster

                self.cluster = Cluster(self.cfg, self.model_dir)
                self.learners = self.cluster.learners
                for name, fn in self.rewards.items():
                    with by_value(fn):
                        self.cluster.rewards.register(name, fn)
        except BaseException:
            self.close()
            raise
        return self

    def _prepare(self) -> None:
        from transformers import AutoTokenizer

        from amray.evaluation.harness import heldout_task
        from amray.models import resolve_model
        from amray.prompts import build_prompts

        cfg = self.cfg
        rows = {} if self.learners_only else {k: self._task_rows(self.data[k], k) for k in ("train", "eval")}
        conversations = conversations_of(self.data["sft"], cfg.data.split) if self.data["sft"] is not None else None
        problems = {} if self.learners_only else load_benchmark_problems(cfg)
        self._check_output_dir()
        try:
            self.model_dir = str(resolve_model(cfg.model.path, cfg.model.cache_dir))
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if rows.get("train"):
            self.train_rows = rows["train"]
            self.train_prompts = build_prompts(self.tokenizer, self.train_rows, cfg.data.system_prompt)
        if rows.get("eval"):
            held_out = build_prompts(self.tokenizer, rows["eval"], cfg.data.system_prompt)
            self.heldout = heldout_task(held_out, cfg.eval, cfg.eval.limit)
        if problems:
            from amray.evaluation.harness import prepare_tasks

            self.benchmarks = prepare_tasks(problems, self.tokenizer, cfg.eval, cfg.bench, cfg.rollout.max_model_len,
                                            cfg.data.system_prompt)
        if conversations is not None:
            self.sft_data = prepared_sft(self.tokenizer, conversations, cfg.sft, origin_of(self.data["sft"], "sft"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / CONFIG_FILE).write_text(to_yaml(cfg))

    def close(self) -> None:
        """Shut the actors down (and a Ray this run started); safe to call twice."""
        global _open
        import ray

        try:
            if self._logger is not None:
                self._logger.close()
            if self.cluster is not None:
                self.cluster.shutdown()
            elif self.learners is not None:
                self.learners.shutdown()
        finally:
            self._logger = self._grpo = self.cluster = self.learners = None
            if _open is self:
                _open = None
            if self._owns_ray and ray.is_initialized():
                ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> Run:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- training ----------------------------------------------------------------------------------

    def sft(self, data: Rows | list[list[dict]] | None = None, *, resume: Path | None = None,
            fingerprint: dict | None = None, checkpoints: bool = False) -> SFTResult:
        """SFT on `data` (chat rows, conversations, or a file; default the run's `sft` data), then the
        engines serve the result. `resume` / `checkpoints`: jobs/sft.py's checkpointing (sft.py)."""
        from amray.checkpoint import driver_state
        from amray.sft import sft_epochs, sft_plan

        self._need_started()
        if self._grpo is not None:  # SFT sets up the optimizer afresh: the GRPO run's would be lost
            raise RuntimeError("SFT after GRPO steps: save the model (run.save()) and start a new Run from it")
        prepared = self.sft_data if data is None else prepared_sft(
            self.tokenizer, conversations_of(data, self.cfg.data.split), self.cfg.sft, origin_of(data, "sft"))
        if prepared is None:
            raise DataError("no SFT data: pass rows or a file to run.sft(...), or set data.sft")
        plan = sft_plan(self.cfg.sft, [len(t) for t in prepared.batch.tokens], self.cfg.data.shuffle_seed)
        print(f"sft: {json.dumps(prepared.report())}, {len(plan)} steps", flush=True)
        logger = self._metrics_logger(driver_state(resume)["step"] if resume else None)
        losses = sft_epochs(self.cfg, self.learners, prepared.batch, logger, plan, resume, fingerprint, checkpoints)
        if self.cluster is not None:
            self.cluster.sync_weights()
        return SFTResult(losses, prepared, plan)

    def step(self, rows: list[dict] | None = None) -> StepResult:
        """One GRPO step (generate, score, advantages, one update, weight sync) on the next prompts of
        the run's `train` rows, or on `rows`; logged to metrics.jsonl like a job's step."""
        from amray.grpo import rollout_advantages
        from amray.prompts import build_prompts
        from amray.trainer import logged_step

        grpo = self._grpo_state()
        prompts = None
        if rows is not None:
            prompts = build_prompts(self.tokenizer, self._task_rows(rows, "step"), self.cfg.data.system_prompt)
        elif grpo.sampler is None:
            raise DataError("no training rows: give amray.Run train=... (or data.train), or rows to run.step(rows)")
        rollout, metrics = logged_step(self.cfg, self.cluster, grpo, self._metrics_logger(), prompts=prompts)
        g = self.cfg.grpo
        return StepResult.of(grpo.steps, rollout, rollout_advantages(rollout, g.adv_eps, g.zero_truncated), metrics)

    def train(self, resume: Path | None = None, fingerprint: dict | None = None) -> RunResult:
        """The rest of the run up to grpo.steps, as jobs/grpo.py runs it: evaluations before, every
        eval.every_steps and after; checkpoints every checkpoint.every_steps and on SIGTERM.
        `resume`: a checkpoint to continue after."""
        from amray.checkpoint import driver_state, fingerprint as run_fingerprint
        from amray.trainer import run_grpo

        grpo = self._grpo_state()
        if grpo.sampler is None:
            raise DataError("no training rows: give amray.Run train=... (or data.train)")
        logger = self._metrics_logger(driver_state(resume)["step"] if resume else None)
        fp = fingerprint or run_fingerprint(self.cfg, self.train_rows)
        result = run_grpo(self.cfg, self.cluster, grpo.sampler, logger, self._evals(), resume, fp, grpo=grpo)
        self._before = result.before
        return result

    def evaluate(self, benchmarks: list[str] | None = None, samples: int | None = None) -> dict[str, float]:
        """pass@1 (over `samples`, default eval.samples) and more of the held-out set and of
        eval.benchmarks (or `benchmarks`, from eval.data_dir), as `eval/<name>/pass@1`; logged."""
        from amray.evaluation.harness import evaluate_benchmarks

        self._need_engines()
        tasks = self._evals()
        if benchmarks is not None:
            cfg = copy.deepcopy(self.cfg)
            cfg.eval.benchmarks = list(benchmarks)
            from amray.evaluation.harness import prepare_tasks

            tasks = ([self.heldout] if self.heldout else []) + prepare_tasks(
                load_benchmark_problems(cfg), self.tokenizer, cfg.eval, cfg.bench, cfg.rollout.max_model_len,
                cfg.data.system_prompt)
        if not tasks:
            raise DataError("nothing to evaluate: give amray.Run eval=... (or data.eval), or benchmarks")
        metrics = evaluate_benchmarks(self.cluster.engines, self.cluster.rewards, tasks, samples or self.cfg.eval.samples,
                                      progress=self.cfg.log.progress)
        self._metrics_logger().log(self.steps, metrics, advance=False)
        return metrics

    # --- rewards, saving, resuming -------------------------------------------------------------------

    def add_reward(self, name: str, fn: Callable[[dict, str], float | tuple[float, dict]]) -> None:
        """Score rows of source `name` with fn(row, response) -> reward (or reward, info dict), in the
        reward workers, time-bounded like the built-in sources. Sent by value (cloudpickle), so a
        function defined in a notebook cell works; before start() it is registered at start."""
        from amray.rewards import SOURCES

        if name in SOURCES:
            raise ValueError(f"{name!r} is a built-in source; register a custom reward under another name")
        self.rewards[name] = fn
        if self.cluster is not None:
            with by_value(fn):
                self.cluster.rewards.register(name, fn)

    def save(self, path: str | Path | None = None) -> Path:
        """The model as a Hugging Face directory (default OUTPUT_DIR/model), written by learner rank 0."""
        self._need_started()
        path = Path(path) if path is not None else self.output_dir / "model"
        self.learners.save(str(path))
        return path

    def checkpoint(self) -> Path:
        """A checkpoint of the GRPO run now (OUTPUT_DIR/checkpoints/step_N), which resume() continues."""
        from amray.checkpoint import fingerprint
        from amray.trainer import save_checkpoint

        grpo = self._grpo_state()
        if grpo.sampler is None:
            raise DataError("a checkpoint holds where the prompt sampler stands: give amray.Run train=...")
        return save_checkpoint(self.cfg, self.cluster, grpo, self._before, fingerprint(self.cfg, self.train_rows))

    def resume(self, path: str | Path | None = None) -> int:
        """Continue after checkpoint `path` (default: checkpoint.resume's choice, the latest complete
        one under OUTPUT_DIR/checkpoints): learners, sampler and engines as they were; metrics logged
        after its step are dropped. Refused when the settings or rows changed. Returns its step."""
        from amray import checkpoint
        from amray.trainer import restore

        grpo = self._grpo_state()
        found = Path(path) if path is not None else checkpoint.to_resume(self.cfg)
        if found is None or not (found / "driver.json").is_file():
            raise ResumeError(f"no complete checkpoint to resume from ({found or self.output_dir / checkpoint.DIR}); "
                              "run.checkpoint() or checkpoint.every_steps write them")
        state = checkpoint.driver_state(found)
        checkpoint.check_fingerprint(state["fingerprint"], checkpoint.fingerprint(self.cfg, self.train_rows),
                                     self.cfg.checkpoint.allow_changes, found)
        if self._logger is not None:
            self._logger.close()
            self._logger = None
        self._metrics_logger(state["step"])
        self._before = restore(self.cfg, self.cluster, grpo, found)
        return grpo.steps

    @property
    def metrics(self) -> pandas.DataFrame:
        """Every record of OUTPUT_DIR/metrics.jsonl so far (SFT steps, GRPO steps, evaluations)."""
        import pandas

        from amray.metrics import read_metrics

        path = self.output_dir / "metrics.jsonl"
        return pandas.DataFrame(read_metrics(path) if path.exists() else [])

    # --- helpers -----------------------------------------------------------------------------------

    def _task_rows(self, data: Rows | None, what: str) -> list[dict] | None:
        """Task rows checked for their sources: the built-in ones and this run's custom rewards."""
        custom = [*self.rewards, *([self.cfg.reward.custom_source] if self.cfg.reward.custom else [])]
        return None if data is None else task_rows_of(data, what, self.cfg.data.split, custom)

    def _check_output_dir(self) -> None:
        """A fresh run never appends to another's metrics.jsonl; one with a checkpoint may resume."""
        from amray.checkpoint import complete

        metrics = self.output_dir / "metrics.jsonl"
        if metrics.exists() and metrics.stat().st_size and not complete(self.output_dir):
            raise ResumeError(f"{self.output_dir} already holds a run (metrics.jsonl) with no checkpoint to continue "
                              "from: give amray.Run a fresh output_dir")

    def _metrics_logger(self, resume_step: int | None = None):
        from amray.checkpoint import complete
        from amray.config import to_dict
        from amray.metrics import MetricsLogger

        if self._logger is None:
            metrics = self.output_dir / "metrics.jsonl"
            if resume_step is None and metrics.exists() and metrics.stat().st_size:
                found = complete(self.output_dir)
                raise ResumeError(f"{self.output_dir} holds the metrics of an earlier run: "
                                  + (f"run.resume() continues it after its latest checkpoint ({found[-1]}), or "
                                     if found else "") + "give amray.Run a fresh output_dir")
            total = 0 if self.learners_only else self.cfg.grpo.steps
            self._logger = MetricsLogger(self.cfg.log, total, to_dict(self.cfg), resume_step=resume_step)
        return self._logger

    def _grpo_state(self) -> GRPO:
        """The run's GRPO state, made on first use (the learners' optimizer set for grpo.steps)."""
        from amray.prompts import PromptSampler
        from amray.trainer import start_grpo

        self._need_engines()
        if self._grpo is None:
            sampler = PromptSampler(self.train_prompts, self.cfg.data.shuffle_seed) if self.train_prompts else None
            self._grpo = start_grpo(self.cfg, self.cluster, sampler)
        return self._grpo

    def _evals(self) -> list:
        return ([self.heldout] if self.heldout else []) + list(self.benchmarks)

    def _need_started(self) -> None:
        if not self.started:
            raise RuntimeError("the run is not started: use `with amray.Run(...) as run:` or run.start()")

    def _need_engines(self) -> None:
        self._need_started()
        if self.cluster is None:
            raise RuntimeError("this run has learners only (learners_only=True): GRPO and evaluation need engines")

    def __repr__(self) -> str:
        state = f"{self.steps} steps" if self.started else "not started"
        return f"amray.Run({self.cfg.model.path!r}, output_dir={str(self.output_dir)!r}, {state})"

