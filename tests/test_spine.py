"""End to end on real components: Ray, vLLM (CPU), FSDP2 over gloo, reward workers.

The central check: after every GRPO update and sync, the engine scores a fixed sequence with
the same logprobs as the learner — the weight sync really moved the new weights.
"""

import json
import os

import numpy as np
import pytest
import ray

from amray.cluster import Cluster, init_ray
from amray.config import load_config
from amray.data.arithmetic import arithmetic_split, solution_text
from amray.engine import Request
from amray.evaluation.harness import heldout_task
from amray.metrics import MetricsLogger, read_metrics
from amray.models import build_tiny_model
from amray.prompts import PromptSampler, build_prompts, prompt_messages
from amray.sft import run_sft, sft_batch
from amray.trainer import evaluate, grpo_step, run_grpo
from amray.weight_sync import WeightSyncTimeout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spine")
    model_dir = str(build_tiny_model(out / "tiny"))
    cfg = load_config(None, [
        "rollout.max_tokens=16", "rollout.max_model_len=128", "trainer.num_workers=2", "trainer.lr=1e-3",
        "grpo.steps=3", "grpo.prompts_per_step=4", "grpo.kl_coef=0.5", "grpo.samples_per_prompt=4", "eval.samples=2",
        "eval.max_tokens=16", "reward.num_workers=1", f"log.output_dir={out / 'run'}", "log.progress=false",
    ])
    init_ray(cfg)
    cluster = Cluster(cfg, model_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train, held_out = arithmetic_split(64, 8, seed=1)
    # A few SFT steps move the policy away from the frozen reference, so the k3 KL term makes
    # every GRPO update change the weights even while a random-init model earns no reward.
    conversations = [[*prompt_messages(r), {"role": "assistant", "content": solution_text(r)}] for r in train]
    cfg.sft.batch_size, cfg.sft.lr = 16, 1e-3
    run_sft(cfg, cluster, sft_batch(tokenizer, conversations))
    assert cluster.engines.weight_versions() == [1]
    yield cfg, cluster, build_prompts(tokenizer, train), build_prompts(tokenizer, held_out)
    cluster.shutdown()
    ray.shutdown()


def fixed_sequence(prompts) -> list[int]:
    return prompts[0].token_ids + prompts[1].token_ids[1:]


def test_engine_samples_carry_tokens_text_logprobs_and_finish_reason(run):
    cfg, cluster, train, _ = run
    sampling = dict(cluster.engines.sampling(), max_tokens=5)
    (sample,) = cluster.engines.run([Request(train[0], "g", 0, sampling, seed=7)])
    assert 0 < len(sample.token_ids) <= 5 and len(sample.logprobs) == len(sample.token_ids)
    assert sample.finish_reason in ("stop", "length") and np.all(sample.logprobs <= 0)
    (again,) = cluster.engines.run([Request(train[0], "g", 0, sampling, seed=7)])
    assert again.token_ids.tolist() == sample.token_ids.tolist()  # seeded sampling is reproducible


def test_text_decoded_once_at_the_end_equals_vllms_own_detokenization(run):
    """Without stop strings the engine skips vLLM's per-token detokenization and decodes each
    sample's text once; with stop strings vLLM detokenizes as it goes. Same tokens, same text."""
    _, cluster, train, _ = run
    greedy = dict(cluster.engines.sampling(temperature=0.0), max_tokens=24)
    plain = cluster.engines.run([Request(p, f"d{i}", 0, greedy) for i, p in enumerate(train[:6])])
    vllm = cluster.engines.run([Request(p, f"v{i}", 0, dict(greedy, stop=["<never>"])) for i, p in enumerate(train[:6])])
    for a, b in zip(plain, vllm):
        assert a.token_ids.tolist() == b.token_ids.tolist()
        assert a.text == b.text and a.text
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_a_groups_samples_sent_together_come_back_as_distinct_samples(run):
    """The engine runs a group's samples handed out together as one vLLM request of n."""
    _, cluster, train, _ = run
    sampling = dict(cluster.engines.sampling(temperature=1.0), max_tokens=8)

    def requests() -> int:
        return sum(ray.get([e.__ray_call__.remote(lambda self: self.vllm_requests) for e in cluster.engines.actors]))

    before = requests()
    out = cluster.engines.run([Request(train[1], "n8", s, sampling) for s in range(8)])
    assert requests() == before + 1
    assert [x.sample_index for x in out] == list(range(8)) and {x.group_id for x in out} == {"n8"}
    assert len({tuple(x.token_ids.tolist()) for x in out}) > 1  # 8 samples, not one copied
    assert all(len(x.logprobs) == len(x.token_ids) > 0 for x in out)


def test_an_engine_runs_its_model_in_one_vllm_process(run):
    """On CPU vLLM would give a one-rank model a worker process beside its engine core; amray
    runs the worker inside the engine core (one_process_engine): one spawn fewer per engine."""
    import psutil

    _, cluster, _, _ = run
    (pid,) = ray.get([e.__ray_call__.remote(lambda self: os.getpid()) for e in cluster.engines.actors])
    titles = [" ".join(p.cmdline()) for p in psutil.Process(pid).children(recursive=True)]
    vllm = [t for t in titles if t.startswith("VLLM::")]
    assert len(vllm) == 1 and "EngineCore" in vllm[0], titles


def test_grpo_steps_sync_weights_into_engines(run):
    cfg, cluster, train, held_out = run
    seq = fixed_sequence(train)
    start = len(train[0].token_ids)
    before = cluster.engines.sequence_logprobs(seq, start)
    logger = MetricsLogger(cfg.log, cfg.grpo.steps)
    sampler = PromptSampler(train)
    versions, previous = [], before
    for step in range(1, 4):
        rollout, metrics = grpo_step(cfg, cluster, sampler.next(cfg.grpo.prompts_per_step))
        logger.log(step, metrics)
        assert len(rollout.groups) == 4 and all(len(g.samples) == 4 for g in rollout.groups)
        versions.append(cluster.engines.weight_versions())
        engine_lp = cluster.engines.sequence_logprobs(seq, start)
        learner_lp = cluster.learners.sequence_logprobs(seq, start)
        np.testing.assert_allclose(engine_lp, learner_lp, atol=2e-3)
        assert np.abs(engine_lp - previous).max() > 1e-4  # this update changed what the engine serves
        previous = engine_lp
    logger.close()
    assert [v[0] for v in versions] == [cluster.weight_version - 2, cluster.weight_version - 1, cluster.weight_version]
    assert all(r["train/kl"] > 0 for r in read_metrics(cfg.log.output_dir + "/metrics.jsonl"))
    records = read_metrics(cfg.log.output_dir + "/metrics.jsonl")
    for key in ("reward/mean", "reward/accuracy", "response/length_mean", "response/truncated_frac",
                "rollout/tokens_per_s", "train/tokens_per_s", "time/generate_s", "time/reward_s",
                "time/train_s", "time/sync_s", "rollout/logprob_mismatch", "weight_version"):
        assert key in records[-1], key
    # on-policy: vLLM's sampling logprobs and the learner's agree on the tokens it sampled
    assert all(r["rollout/logprob_mismatch"] < 0.02 for r in records), [r["rollout/logprob_mismatch"] for r in records]
    json.dumps(records)


def test_eval_reports_pass_at_1_over_k_samples(run):
    cfg, cluster, _, held_out = run
    result = evaluate(cfg, cluster, [heldout_task(held_out, cfg.eval)])
    assert 0.0 <= result["eval/heldout/pass@1"] <= result["eval/heldout/pass@2"] <= 1.0
    assert 1.0 <= result["eval/heldout/response_tokens"] <= cfg.eval.max_tokens


def test_a_hung_sync_raises_instead_of_hanging(run):
    cfg, cluster, _, _ = run
    cluster.transfer.timeout_s = 0.0
    try:
        with pytest.raises(WeightSyncTimeout, match="did not finish within"):
            cluster.sync_weights()
    finally:
        cluster.transfer.timeout_s = cfg.sync.timeout_s
    cluster.sync_weights()  # the next sync completes and every engine serves it
    assert cluster.engines.weight_versions() == [cluster.weight_version]


def test_sync_falls_back_to_vllms_rpc_channel_when_the_memory_file_cannot_be_mapped(run):
    """Runs last in this module: afterwards the engines sync through the channel."""
    cfg, cluster, train, _ = run

    def break_stage(engine):
        # the parts land in the file, but the worker is told a process that does not exist: its
        # open of /proc/PID/fd/FD fails
        write = engine.stage.write

        def elsewhere(meta, parts):
            (_, fd, n), intact = write(meta, parts)
            return (2**22 + 1, fd, n), intact

        engine.stage.write = elsewhere
        return engine.stage is not None

    assert ray.get([e.__ray_call__.remote(break_stage) for e in cluster.engines.actors]) == [True]
    seq, start = fixed_sequence(train), len(train[0].token_ids)
    before = cluster.engines.sequence_logprobs(seq, start)
    cfg.grpo.steps = 1
    logger = MetricsLogger(cfg.log, 1)
    run_grpo(cfg, cluster, PromptSampler(train), logger)
    logger.close()
    assert ray.get([e.__ray_call__.remote(lambda engine: engine.stage) for e in cluster.engines.actors]) == [None]
    engine_lp = cluster.engines.sequence_logprobs(seq, start)
    np.testing.assert_allclose(engine_lp, cluster.learners.sequence_logprobs(seq, start), atol=2e-3)
    assert np.abs(engine_lp - before).max() > 1e-4
