"""Faults in the middle of a step, on real components (2 vLLM engines, 2 FSDP2 ranks, reward
workers): dispatch around a slow engine, an engine killed while it generates, a reward worker
killed or hung, the reward router killed. Every step completes with every sample exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from amray.cluster import Cluster, init_ray
from amray.config import load_config
from amray.engine import Request
from amray.models import build_tiny_model
from amray.prompts import PromptSampler, build_prompts
from amray.trainer import GRPO

DATA = Path(__file__).parent / "data"


def pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def later(seconds: float, action) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(seconds), action()), daemon=True)
    t.start()
    return t


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model_dir = str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny"))
    cfg = load_config(None, [
        "rollout.num_engines=2", "rollout.max_tokens=4", "rollout.max_model_len=128", "rollout.num_cpus=0.25",
        "trainer.num_workers=2", "trainer.lr=1e-3", "grpo.prompts_per_step=8", "grpo.samples_per_prompt=4",
        "reward.num_workers=2", "reward.timeout_s=1", "reward.hang_grace_s=4", f"reward.custom={DATA / 'slow_reward.py'}:reward",
        "log.progress=false"])
    init_ray(cfg)
    cluster = Cluster(cfg, model_dir)
    from transformers import AutoTokenizer

    rows = [{"id": f"q{i}", "source": "custom", "prompt": f"Tell me about number {i}."} for i in range(16)]
    prompts = build_prompts(AutoTokenizer.from_pretrained(model_dir), rows)
    cluster.learners.configure(cfg.trainer.lr, 100)
    yield cfg, cluster, prompts
    cluster.shutdown()


def drain(pool, requests: list[Request]) -> dict[tuple[str, int], int]:
    """Submit and collect every request; how many times each landed."""
    pool.submit(requests)
    landed: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 300
    while pool.busy and time.monotonic() < deadline:
        for request, sample in pool.step():
            assert (sample.group_id, sample.sample_index) == request.key
            landed[request.key] = landed.get(request.key, 0) + 1
    return landed


def test_balanced_dispatch_gives_most_work_to_the_engine_that_frees_up(run) -> None:
    cfg, cluster, prompts = run
    pool = cluster.engines
    pool.capacity = 2  # hold requests back, hand them out as engines free up
    served = [s.served for s in pool.slots]
    ray.get(pool.actors[1].slow_down.remote(0.4))
    try:
        sampling = dict(pool.sampling(), max_tokens=2)
        requests = [Request(p, f"g{i}", s, sampling) for i, p in enumerate(prompts[:8]) for s in range(4)]
        landed = drain(pool, requests)
    finally:
        ray.get(pool.actors[1].slow_down.remote(0.0))
        pool.capacity = 256
    assert landed == {r.key: 1 for r in requests}  # none lost, none twice
    fast, slow = (pool.slots[i].served - served[i] for i in (0, 1))
    assert fast + slow == 32 and fast > 2 * slow, (fast, slow)


def test_an_overdue_request_is_redispatched_and_lands_once(run) -> None:
    cfg, cluster, prompts = run
    pool = cluster.engines
    ray.get(pool.actors[0].slow_down.remote(3.0))
    pool.timeout_s = 1.5
    try:
        sampling = dict(pool.sampling(), max_tokens=2)
        requests = [Request(p, f"late{i}", 0, sampling) for i, p in enumerate(prompts[:4])]
        landed = drain(pool, requests)
    finally:
        ray.get(pool.actors[0].slow_down.remote(0.0))
        pool.timeout_s = 120.0 + 0.5 * cfg.rollout.max_tokens
    assert landed == {r.key: 1 for r in requests}
    assert all(r.attempts >= 1 for r in requests if pool.home.get(r.group_id) == 0)


def test_an_engine_killed_while_it_generates_is_replaced_and_the_step_completes(run) -> None:
    cfg, cluster, prompts = run
    pool = cluster.engines
    grpo = GRPO(cfg, cluster, PromptSampler(prompts, seed=3))
    grpo.step()
    ray.get(pool.actors[1].slow_down.remote(2.0))  # it holds its requests long enough to die with them
    victim = pid_of(pool.actors[1])
    later(1.0, lambda: os.kill(victim, signal.SIGKILL))
    rollout, m = grpo.step()
    assert m["rollout/samples"] == 8 * 4 and len(rollout.samples) == 32
    assert sorted((g.id, s.sample_index) for g in rollout.groups for s in g.samples) == \
        sorted((g.id, i) for g in rollout.groups for i in range(4))
    assert m["fault/engine_restarts"] >= 1
    deadline = time.monotonic() + 240
    while any(s.state != "ready" for s in pool.slots) and time.monotonic() < deadline:
        grpo.step()  # the replacement starts and loads the current weights meanwhile
    assert all(s.state == "ready" for s in pool.slots), [s.state for s in pool.slots]
    served = [s.served for s in pool.slots]
    _, m = grpo.step()
    assert all(s.served > before for s, before in zip(pool.slots, served))  # both engines serve again
    assert pool.weight_versions() == [cluster.weight_version] * 2
    seq = prompts[0].token_ids + prompts[1].token_ids[1:]
    start = len(prompts[0].token_ids)
    learner = cluster.learners.sequence_logprobs(seq, start)
    for actor in pool.actors:  # the replacement serves the learner's weights
        np.testing.assert_allclose(ray.get(actor.sequence_logprobs.remote(seq, start)), learner, atol=2e-3)


def test_a_reward_worker_killed_mid_step_costs_a_retry_not_a_zero(run) -> None:
    cfg, cluster, prompts = run
    grpo = GRPO(cfg, cluster, PromptSampler(prompts, seed=4))
    victim = cluster.rewards.workers()[0]
    later(1.0, lambda: ray.kill(victim))
    rollout, m = grpo.step()
    assert m["fault/reward_retries"] >= 1 and m["reward/error_frac"] == 0.0
    assert all("error" not in info for info in rollout.reward_infos)
    assert victim not in cluster.rewards.workers()  # replaced, never put back to draw rows


def test_a_hung_reward_worker_is_replaced_and_its_row_scored_elsewhere(run) -> None:
    cfg, cluster, prompts = run
    grpo = GRPO(cfg, cluster, PromptSampler(prompts, seed=5))
    victim = cluster.rewards.workers()[1]
    pid = pid_of(victim)
    os.kill(pid, signal.SIGSTOP)  # alive but answering nothing
    try:
        rollout, m = grpo.step()
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert m["fault/reward_retries"] >= 1 and m["reward/error_frac"] == 0.0
    assert victim not in cluster.rewards.workers()


def test_a_killed_reward_router_is_replaced_and_its_rows_sent_again(run) -> None:
    cfg, cluster, prompts = run
    grpo = GRPO(cfg, cluster, PromptSampler(prompts, seed=6))
    later(1.0, lambda: ray.kill(cluster.rewards._router))
    rollout, m = grpo.step()
    assert cluster.rewards.router_restarts >= 1
    assert m["reward/error_frac"] == 0.0 and m["rollout/samples"] == 32


def test_a_request_an_engine_cannot_run_is_retried_then_named_and_the_engines_live_on(run) -> None:
    cfg, cluster, prompts = run
    pool = cluster.engines
    restarts = pool.restarts
    bad = Request(prompts[0], "bad", 0, dict(pool.sampling(), temperature=-1.0))  # vLLM rejects it
    with pytest.raises(RuntimeError, match="failed 4 times.*temperature"):
        drain(pool, [bad])
    assert pool.restarts == restarts  # a request's own fault is not an engine's
    pool.queue.clear()
    good = [Request(p, f"after{i}", 0, dict(pool.sampling(), max_tokens=2)) for i, p in enumerate(prompts[:4])]
    assert drain(pool, good) == {r.key: 1 for r in good}


def test_an_engine_refusing_for_stale_weights_is_replaced_and_its_requests_land_elsewhere(run) -> None:
    cfg, cluster, prompts = run
    pool = cluster.engines
    restarts = pool.restarts
    ray.get(pool.actors[1].__ray_call__.remote(lambda self: setattr(self, "version", -1)))  # as a failed sync leaves it
    sampling = dict(pool.sampling(), max_tokens=2)
    requests = [Request(p, f"stale{i}", s, sampling) for i, p in enumerate(prompts[:4]) for s in range(2)]
    landed = drain(pool, requests)
    assert landed == {r.key: 1 for r in requests}
    assert pool.restarts == restarts + 1  # engine 1 was replaced, not asked again
