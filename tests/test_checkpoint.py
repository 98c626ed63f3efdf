"""Checkpoints on real components: sharded save/load of model, optimizer and schedule (the next
step after a restore is the same step), a kill during a write, export to a Hugging Face directory
that transformers and vLLM load, the resume guards, and a learner rank that dies mid-run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from amray import checkpoint
from amray.cluster import Cluster, init_ray
from amray.config import load_config
from amray.grpo import GRPOLoss, rollout_advantages
from amray.learner import LearnerGroup
from amray.metrics import MetricsLogger, read_metrics
from amray.models import build_tiny_model
from amray.prompts import PromptSampler, build_prompts
from amray.trainer import LearnerDied, run_grpo
from test_pipeline import synthetic_rollout

REWARD = Path(__file__).parent / "data" / "first_letter_reward.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny"))


def config(tmp: Path, *extra: str):
    return load_config(None, ["rollout.max_tokens=2", "rollout.max_model_len=128", "trainer.num_workers=2",
                              "trainer.lr=1e-3", "grpo.prompts_per_step=4", "grpo.samples_per_prompt=4",
                              "grpo.zero_truncated=false", "reward.num_workers=1", f"reward.custom={REWARD}:reward",
                              f"log.output_dir={tmp}", "log.progress=false", *extra])


def logprobs(learners: LearnerGroup, seq: list[int]) -> np.ndarray:
    return learners.sequence_logprobs(seq, 1)


SEQ = list(range(3, 60))


def test_a_restored_learner_takes_the_same_next_step(model_dir: str, tmp_path: Path) -> None:
    """Model, optimizer moments and LR schedule all come back: the step after a restore moves the
    weights exactly as the step after the save did."""
    cfg = config(tmp_path)
    init_ray(cfg)
    rollout = synthetic_rollout(1)
    batch, loss = rollout.train_batch(rollout_advantages(rollout)), GRPOLoss()
    first = LearnerGroup(model_dir, cfg.trainer)
    first.configure(1e-2, 4, 1, 0.1)  # warmup + cosine: the schedule's position matters
    first.train_step(batch, loss)
    path = checkpoint.save(first, tmp_path, 1, {"step": 1, "model_dir": model_dir, "train_dtype": "float32"}, 2)
    saved = logprobs(first, SEQ)
    expected = first.train_step(batch, loss)
    expected_lp = logprobs(first, SEQ)
    first.shutdown()
    second = LearnerGroup(model_dir, cfg.trainer)
    try:
        second.configure(1e-2, 4, 1, 0.1)
        second.load_checkpoint(str(path / "learner"))
        np.testing.assert_array_equal(logprobs(second, SEQ), saved)
        got = second.train_step(batch, loss)
        assert got["lr"] == expected["lr"] and got["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-6)
        np.testing.assert_allclose(logprobs(second, SEQ), expected_lp, atol=1e-6)
    finally:
        second.shutdown()


class DiesWhileSaving:
    """A learner group killed half way through writing its shards."""

    def save_checkpoint(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "__0_0.distcp").write_bytes(b"partial")
        raise KeyboardInterrupt("killed")


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_loadable(model_dir: str, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    init_ray(cfg)
    learners = LearnerGroup(model_dir, cfg.trainer)
    try:
        learners.configure(1e-3, 10)
        checkpoint.save(learners, tmp_path, 2, {"step": 2}, keep=1)
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save(DiesWhileSaving(), tmp_path, 4, {"step": 4}, keep=1)
        assert [p.name for p in checkpoint.complete(tmp_path)] == ["step_000002"]  # keep=1 deleted nothing yet
        cfg.log.output_dir = str(tmp_path)
        assert checkpoint.to_resume(cfg) == checkpoint.step_dir(tmp_path, 2)
        before = logprobs(learners, SEQ)
        learners.load_checkpoint(str(checkpoint.step_dir(tmp_path, 2) / "learner"))
        np.testing.assert_array_equal(logprobs(learners, SEQ), before)
        checkpoint.save(learners, tmp_path, 4, {"step": 4}, keep=1)  # the next complete one replaces it
        assert [p.name for p in checkpoint.complete(tmp_path)] == ["step_000004"]
    finally:
        learners.shutdown()


def test_resume_guards(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    rows = [{"id": 1, "source": "custom", "prompt": "p"}]
    ckpt = checkpoint.step_dir(tmp_path, 2)
    ckpt.mkdir(parents=True)
    (ckpt / "driver.json").write_text(json.dumps({"step": 2, "fingerprint": checkpoint.fingerprint(cfg, rows)}))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    assert checkpoint.plan_resume(cfg, rows)[0] == ckpt  # the same run: continues
    changed = config(tmp_path, "trainer.lr=5e-4", "log.progress=true")  # log.* may change, lr may not
    with pytest.raises(checkpoint.ResumeError, match=r"trainer.lr: 0.001 -> 0.0005"):
        checkpoint.plan_resume(changed, rows)
    with pytest.raises(checkpoint.ResumeError, match="the training data"):
        checkpoint.plan_resume(cfg, rows + [{"id": 2, "source": "custom", "prompt": "q"}])
    allowed = config(tmp_path, "trainer.lr=5e-4", "checkpoint.allow_changes=[trainer.lr]")
    assert checkpoint.plan_resume(allowed, rows)[0] == ckpt
    never = config(tmp_path, "checkpoint.resume=never")
    with pytest.raises(checkpoint.ResumeError, match="checkpoint.resume=auto"):
        checkpoint.plan_resume(never, rows)  # a second run would be appended to the first's metrics
    (ckpt / "driver.json").unlink()
    with pytest.raises(checkpoint.ResumeError, match="no complete checkpoint"):
        checkpoint.plan_resume(cfg, rows)


def test_export_loads_in_transformers_and_in_vllm(model_dir: str, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    init_ray(cfg)
    learners = LearnerGroup(model_dir, cfg.trainer)
    try:
        learners.configure(1e-2, 10)
        rollout = synthetic_rollout(2)
        learners.train_step(rollout.train_batch(rollout_advantages(rollout)), GRPOLoss())
        path = checkpoint.save(learners, tmp_path, 1, {"step": 1, "model_dir": model_dir, "train_dtype": "float32"}, 2)
        want = logprobs(learners, SEQ)
    finally:
        learners.shutdown()
    assert checkpoint.main(["export", str(path), str(tmp_path / "fp32")]) == 0
    assert checkpoint.main(["export", str(path), str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    from transformers import AutoModelForCausalLM

    for name, atol in (("fp32", 1e-5), ("bf16", 0.1)):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name)
        assert model.dtype == (torch.float32 if name == "fp32" else torch.bfloat16)
        with torch.no_grad():
            logits = model(torch.tensor([SEQ])).logits[0, :-1].float()
        got = torch.log_softmax(logits, -1).gather(-1, torch.tensor(SEQ[1:])[:, None])[:, 0].numpy()
        np.testing.assert_allclose(got, want, atol=atol)
    from amray.engine import EnginePool

    pool = EnginePool(str(tmp_path / "fp32"), cfg.rollout)
    try:
        np.testing.assert_allclose(pool.sequence_logprobs(SEQ, 1), want, atol=2e-3)
    finally:
        pool.shutdown()


def test_a_dead_learner_rank_stops_the_run_naming_it_and_a_resume_continues(model_dir: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, "grpo.steps=3", "checkpoint.every_steps=1")
    init_ray(cfg)
    from transformers import AutoTokenizer

    rows = [{"id": f"q{i}", "source": "custom", "prompt": f"Name a colour, {i}."} for i in range(8)]
    prompts = build_prompts(AutoTokenizer.from_pretrained(model_dir), rows)
    fingerprint = checkpoint.fingerprint(cfg, rows)
    cluster = Cluster(cfg, model_dir)
    logger = MetricsLogger(cfg.log, 3)
    victim = ray.get(cluster.learners.ranks[1].__ray_call__.remote(lambda self: os.getpid()))
    calls = {"n": 0}
    real_step = cluster.learners.train_step if cfg.grpo.pipeline == "sync" else cluster.learners.begin_update

    def kill_on_second_update(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(victim, signal.SIGKILL)
            time.sleep(1.0)
        return real_step(*args)

    if cfg.grpo.pipeline == "sync":
        cluster.learners.train_step = kill_on_second_update
    else:
        cluster.learners.begin_update = kill_on_second_update
    try:
        with pytest.raises(LearnerDied, match=r"learner rank 1 died.*step_000001.*checkpoint.resume=auto"):
            run_grpo(cfg, cluster, PromptSampler(prompts), logger, fingerprint=fingerprint)
    finally:
        logger.close()
        cluster.shutdown()
    start, _ = checkpoint.plan_resume(cfg, rows)
    assert start == checkpoint.step_dir(tmp_path, 1)
    cluster = Cluster(cfg, model_dir)
    logger = MetricsLogger(cfg.log, 3, resume_step=1)
    try:
        result = run_grpo(cfg, cluster, PromptSampler(prompts), logger, resume=start, fingerprint=fingerprint)
    finally:
        logger.close()
        cluster.shutdown()
    assert result.last_step == 3 and not result.stopped
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "reward/mean" in r]
    assert steps == [1, 2, 3]

