"""Placement across nodes, on a simulated multi-node Ray cluster (several raylets on this
machine, each with its own custom resources): engines on one node, learner ranks on another, the
reward workers wherever there is room. A GRPO step runs, and the engines then serve the learner's
weights (the packed weights cross from the learners' object store to the engines' node)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster as RayCluster

from amray.cluster import Cluster
from amray.config import load_config
from amray.models import build_tiny_model
from amray.prompts import build_prompts
from amray.trainer import grpo_step

REWARD = Path(__file__).parent / "data" / "first_letter_reward.py"


def node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


@pytest.fixture
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = RayCluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}})
    rollout = cluster.add_node(num_cpus=4, resources={"rollout_node": 4})
    learner = cluster.add_node(num_cpus=4, resources={"learner_node": 4})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster, rollout.node_id, learner.node_id
    ray.shutdown()
    cluster.shutdown()


def test_engines_and_learners_on_different_nodes_run_a_step_and_sync(two_nodes, tmp_path: Path) -> None:
    ray_cluster, rollout_node, learner_node = two_nodes
    model_dir = str(build_tiny_model(tmp_path / "tiny"))
    cfg = load_config(None, [
        f"ray.address={ray_cluster.address}", "rollout.num_engines=2", "rollout.resources={rollout_node: 1}",
        "rollout.max_tokens=4", "rollout.max_model_len=128", "trainer.num_workers=2",
        "trainer.resources={learner_node: 1}", "trainer.lr=1e-2", "grpo.prompts_per_step=4",
        "grpo.samples_per_prompt=4", "grpo.zero_truncated=false", "reward.num_workers=1",
        f"reward.custom={REWARD}:reward", "log.progress=false"])
    cluster = Cluster(cfg, model_dir)
    try:
        assert {node_of(a) for a in cluster.engines.actors} == {rollout_node}
        assert {node_of(r) for r in cluster.learners.ranks} == {learner_node}
        from transformers import AutoTokenizer

        rows = [{"id": f"q{i}", "source": "custom", "prompt": f"Say a word, {i}."} for i in range(4)]
        prompts = build_prompts(AutoTokenizer.from_pretrained(model_dir), rows)
        seq, start = prompts[0].token_ids + prompts[1].token_ids[1:], len(prompts[0].token_ids)
        cluster.learners.configure(cfg.trainer.lr, 10)
        cluster.sync_weights()
        before = cluster.engines.sequence_logprobs(seq, start)
        rollout, metrics = grpo_step(cfg, cluster, prompts)
        assert metrics["rollout/samples"] == 16 and metrics["weight_version"] == cluster.weight_version
        learner = cluster.learners.sequence_logprobs(seq, start)
        for actor in cluster.engines.actors:
            served = ray.get(actor.sequence_logprobs.remote(seq, start))
            np.testing.assert_allclose(served, learner, atol=2e-3)
        assert np.abs(learner - before).max() > 1e-4  # the step moved the weights the engines now serve
    finally:
        cluster.shutdown()


def test_what_cannot_be_placed_is_named_instead_of_waiting_forever(two_nodes, tmp_path: Path) -> None:
    ray_cluster, _, _ = two_nodes
    cfg = load_config(None, [f"ray.address={ray_cluster.address}", "rollout.resources={gpu_node: 1}",
                             "ray.placement_timeout_s=3"])
    with pytest.raises(RuntimeError, match=r"cannot place 1 rollout engines.*gpu_node"):
        Cluster(cfg, str(build_tiny_model(tmp_path / "tiny")))
