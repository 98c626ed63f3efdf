"""amray.Run, the Python API, on real components: what a step returns is what the step did, a
reward registered from Python is what the reward workers compute, a checkpoint resumes exactly,
and starting runs again (a notebook cell run twice) never leaves an actor, a placement group or a
Ray behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.util.state import list_actors, list_placement_groups

import amray
from amray.config import load_config
from amray.data.arithmetic import arithmetic_split
from amray.rayenv import init_ray
from amray.rewards import final_answer

CONFIG = {"rollout": {"max_tokens": 8, "max_model_len": 128}, "trainer": {"lr": 1e-3},
          "grpo": {"steps": 20, "prompts_per_step": 4, "samples_per_prompt": 4},
          "eval": {"samples": 1, "max_tokens": 8}, "reward": {"num_workers": 1}, "log": {"progress": False}}


def near_length(row: dict, response: str) -> tuple[float, dict]:
    """Reads the row's own field `target`: a reward that differs sample to sample, so advantages do."""
    return max(0.0, 1.0 - abs(len(response) - row["target"]) / 16), {"target": row["target"], "chars": len(response)}


def rows(n: int, source: str = "near_length") -> list[dict]:
    return [{"id": f"{source}-{i}", "source": source, "prompt": f"Say something, number {i}.", "target": 2 + i % 12}
            for i in range(n)]


TRAIN = {r["id"]: r for r in rows(24)}


def settle(measure, expected, timeout: float = 60.0):
    """Ray ends killed actors asynchronously: wait (bounded) for the state API to show it."""
    deadline = time.monotonic() + timeout
    while (value := measure()) != expected and time.monotonic() < deadline:
        time.sleep(1)
    return value


def alive_actors() -> list[str]:
    return sorted(a.class_name for a in list_actors(filters=[("state", "=", "ALIVE")]))


def live_groups() -> int:
    return sum(1 for g in list_placement_groups() if g.state != "REMOVED")


def test_a_run_that_started_ray_shows_its_dashboard_and_shuts_it_down(tmp_path: Path, capsys) -> None:
    from ray.job_submission import JobSubmissionClient

    if ray.is_initialized():
        ray.shutdown()
    chats = [[{"role": "user", "content": f"{a} + 1?"}, {"role": "assistant", "content": str(a + 1)}] for a in range(8)]
    run = amray.Run(CONFIG, ["trainer.num_workers=1", "sft.batch_size=4", f"model.cache_dir={tmp_path / 'models'}",
                             "ray.dashboard=true"], output_dir=tmp_path / "sft", learners_only=True)
    with run:
        assert ray.is_initialized()
        url = capsys.readouterr().out.split("Ray dashboard: ")[1].split()[0]
        drivers = [j.driver_info.pid for j in JobSubmissionClient(url).list_jobs() if j.driver_info]
        assert str(os.getpid()) in drivers  # the dashboard is up and shows this process's run
        sft = run.sft(chats)
        assert len(sft.losses) == 2 and list(sft.to_pandas()["loss"]) == sft.losses
        with pytest.raises(RuntimeError, match="learners only"):
            run.step()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def own_ray(models):
    """A Ray this module starts itself: the runs join it, and must leave it up. With its dashboard:
    Ray's state API (list_actors) is served by it."""
    init_ray(load_config(None, ["ray.dashboard=true"]))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def run(own_ray, models, tmp_path_factory):
    _, held_out = arithmetic_split(8, 4, seed=2)
    run = amray.Run(CONFIG, [f"model.cache_dir={models}"], output_dir=tmp_path_factory.mktemp("api") / "run",
                    train=list(TRAIN.values()), eval=held_out, rewards={"near_length": near_length})
    run.start()
    yield run
    run.close()


def test_a_step_returns_its_samples_rewards_and_advantages(run) -> None:
    step = run.step()
    assert step.step == run.steps == 1
    assert len(step.prompts) == 4 and len(step.samples) == 16
    assert step.rollout.samples and np.array_equal(step.rewards, step.rollout.rewards)
    for group in step.rollout.groups:  # each sample's advantage is its own group's normalised reward
        mine = [s for s in step.samples if s.group_id == group.id]
        assert [s.response for s in mine] == [s.text for s in group.samples]
        rewards = np.array([s.reward for s in mine])
        std = rewards.std(ddof=1)
        expected = (rewards - rewards.mean()) / (std + run.cfg.grpo.adv_eps) if std > 0 else 0 * rewards
        expected[[s.truncated for s in mine]] = 0.0  # grpo.zero_truncated
        assert [s.advantage for s in mine] == pytest.approx(expected.tolist(), abs=1e-5)
        assert all(s.prompt == step.prompts[step.rollout.groups.index(group)] for s in mine)
    assert np.ptp(step.advantages) > 0  # lengths differ, so rewards and advantages do
    table = step.to_pandas()
    assert len(table) == 16 and {"group_id", "prompt", "response", "reward", "advantage", "truncated", "length",
                                 "info"} <= set(table.columns)
    assert table["reward"].tolist() == pytest.approx(step.rewards.tolist())
    assert step.metrics["reward/mean"] == pytest.approx(float(step.rewards.mean()))
    logged = run.metrics
    assert logged.loc[logged["step"] == 1, "reward/mean"].tolist() == [step.metrics["reward/mean"]]


def test_a_reward_registered_from_python_is_what_the_workers_compute(run) -> None:
    step = run.step()  # near_length, given to amray.Run(rewards=...): registered at start
    for s in step.samples:
        row = TRAIN[s.row_id]
        assert (s.reward, s.info["target"]) == (pytest.approx(near_length(row, final_answer(s.response))[0]), row["target"])
        assert s.info["custom"] == "(registered from Python)"

    def starts_with_vowel(row: dict, response: str) -> float:
        return float(response[:1].lower() in row["vowels"])

    run.add_reward("vowel", starts_with_vowel)  # registered into the running workers
    extra = [{"id": f"v{i}", "source": "vowel", "prompt": "Say a word.", "vowels": "aeiou"} for i in range(4)]
    step = run.step(extra)
    assert {s.row_id for s in step.samples} == {r["id"] for r in extra}
    assert [s.reward for s in step.samples] == [float(final_answer(s.response)[:1].lower() in "aeiou")
                                                for s in step.samples]
    assert all("error" not in s.info for s in step.samples)


def test_a_checkpoint_resumes_the_run_exactly(run) -> None:
    saved = run.checkpoint()
    at = run.steps
    served = run.cluster.engines.weights_hash
    first = run.step()
    assert run.resume(saved) == at
    assert run.cluster.engines.weights_hash == served  # the engines serve the checkpoint's weights again
    again = run.step()
    assert again.step == first.step and again.metrics["data/prompts_hash"] == first.metrics["data/prompts_hash"]
    assert again.metrics["train/lr"] == first.metrics["train/lr"]
    steps = run.metrics.dropna(subset=["reward/mean"])["step"].tolist()
    assert steps == list(range(1, at + 2))  # the step taken before the resume is logged once, not twice


def test_evaluate_and_save(run, tmp_path: Path) -> None:
    metrics = run.evaluate()
    assert 0.0 <= metrics["eval/heldout/pass@1"] <= 1.0 and metrics["eval/heldout/response_tokens"] <= 8
    assert run.metrics.dropna(subset=["eval/heldout/pass@1"])["step"].tolist() == [run.steps]
    assert (run.save(tmp_path / "model") / "config.json").is_file()


def test_starting_runs_again_leaves_no_actor_group_or_ray_behind(run, models, tmp_path: Path) -> None:
    """What a notebook does: a cell that starts a run, then another cell starting one (the earlier
    run was never closed), here as a `with` block. The start closes what the last one left open;
    leaving the block closes its own."""
    one_run, groups = alive_actors(), live_groups()
    assert one_run.count("LearnerRank") == 2 and groups
    with amray.Run(CONFIG, [f"model.cache_dir={models}"], output_dir=tmp_path / "again", train=rows(8),
                   rewards={"near_length": near_length}) as again:
        assert not run.started and again.started
        assert settle(alive_actors, one_run) == one_run and live_groups() == groups
    assert not again.started
    assert settle(alive_actors, []) == [] and settle(live_groups, 0) == 0
    assert ray.is_initialized()  # the module's own Ray: no run started it, so none stops it
