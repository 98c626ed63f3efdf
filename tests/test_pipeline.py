"""The GRPO pipelines on real components: streamed learning equals the batched update, the
asynchronous mode keeps every sample within its staleness bound, and GRPO really learns what the
reward favours (with no KL term to move the weights on its own)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from amray.batch import Group, Prompt, Rollout, Sample
from amray.cluster import Cluster, init_ray
from amray.config import load_config
from amray.grpo import GRPOLoss, rollout_advantages
from amray.learner import LearnerGroup
from amray.models import build_tiny_model
from amray.prompts import PromptSampler, build_prompts
from amray.rollout import generate_and_score
from amray.trainer import GRPO

REWARD = Path(__file__).parent / "data" / "first_letter_reward.py"
WORDS = "apple river stone cloud music paper light green ocean tiger".split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny"))


def config(*extra: str):
    return load_config(None, ["rollout.max_tokens=1", "rollout.max_model_len=128", "trainer.num_workers=2",
                              "trainer.lr=1e-3", "grpo.prompts_per_step=8", "grpo.samples_per_prompt=8",
                              "grpo.zero_truncated=false", "reward.num_workers=2", f"reward.custom={REWARD}:reward",
                              "log.progress=false", *extra])


def custom_prompts(model_dir: str) -> list[Prompt]:
    from transformers import AutoTokenizer

    rows = [{"id": f"q{i}", "source": "custom", "prompt": f"Say one word about {w}."} for i, w in enumerate(WORDS)]
    return build_prompts(AutoTokenizer.from_pretrained(model_dir), rows)


def synthetic_rollout(seed: int) -> Rollout:
    """Four groups of four samples of mixed lengths, rewards with signal in every group."""
    rng = np.random.default_rng(seed)
    groups = []
    for g in range(4):
        prompt = Prompt({"id": f"p{g}"}, rng.integers(3, 400, size=int(rng.integers(5, 20))).tolist())
        samples = [Sample(f"g{g}", s, rng.integers(3, 400, size=int(rng.integers(2, 30))),
                          np.full(0, 0.0, np.float32), "x", "stop", 0) for s in range(4)]
        for s in samples:
            s.logprobs = rng.uniform(-6, -0.1, size=len(s.token_ids)).astype(np.float32)
        groups.append(Group(f"g{g}", prompt, samples, np.array([1, 0, 1, 0][g % 2:] + [1, 0][: g % 2], np.float32)))
    return Rollout(groups)


def packed_weights(learners: LearnerGroup) -> np.ndarray:
    return ray.get(learners.pack_weights()[0]).buffer.view(np.float32).copy()


def test_streamed_update_equals_the_batched_update(model_dir: str) -> None:
    """Also: the batched update with each group's prompt laid out once per micro-batch
    (trainer.share_prompts, the default) equals the same update on the rows one by one."""
    cfg = config("trainer.micro_batch_tokens=64")  # several micro-batches per call
    init_ray(cfg)
    rollout = synthetic_rollout(0)
    advantages = rollout_advantages(rollout)
    loss = GRPOLoss(temperature=1.0)
    batched, streamed = LearnerGroup(model_dir, cfg.trainer), LearnerGroup(model_dir, cfg.trainer)
    rows = LearnerGroup(model_dir, config("trainer.micro_batch_tokens=64", "trainer.share_prompts=false").trainer)
    try:
        assert batched.share_prompts and not rows.share_prompts
        for lg in (batched, streamed, rows):
            lg.configure(1e-2, 10)
        start = packed_weights(batched)
        whole = batched.train_step(rollout.train_batch(advantages), loss)
        one_by_one = rows.train_step(rollout.train_batch(advantages), loss)
        moved_rows = packed_weights(rows) - start
        streamed.begin_update()
        refs = [r for g in rollout.groups for r in streamed.accumulate(Rollout([g]).train_batch(advantages), loss)]
        parts = streamed.finish_update()
        assert all(s > 0 for s in ray.get(refs))
        moved_batched, moved_streamed = packed_weights(batched) - start, packed_weights(streamed) - start
        assert np.abs(moved_batched).max() > 1e-3  # the update moved the weights
        # Adam divides each gradient by its own magnitude, so elements whose gradient is ~0 move by
        # float noise: compare the update as a whole, and the gradient's norm before Adam.
        assert np.linalg.norm(moved_streamed - moved_batched) < 1e-3 * np.linalg.norm(moved_batched)
        assert parts["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)  # scale: the token-mean is exact
        assert parts["tokens"] == whole["tokens"] == rollout.train_batch(advantages).trained_tokens
        assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-4, abs=1e-7)
        assert np.linalg.norm(moved_rows - moved_batched) < 1e-3 * np.linalg.norm(moved_batched)
        assert one_by_one["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)
        assert one_by_one["loss"] == pytest.approx(whole["loss"], rel=1e-4, abs=1e-7)
    finally:
        batched.shutdown()
        streamed.shutdown()
        rows.shutdown()


def test_k_updates_per_batch_are_k_successive_updates_clipped_against_the_sampling_policy(model_dir: str) -> None:
    """grpo.updates_per_batch=2, streamed and sync: the two mini-batches' updates equal two
    train_steps on the halves, the second one's PPO ratio taken against the sampling logprobs."""
    from amray.trainer import Update

    cfg = config("grpo.updates_per_batch=2")
    init_ray(cfg)
    rollout = synthetic_rollout(2)
    advantages = rollout_advantages(rollout)
    loss = GRPOLoss(temperature=1.0, is_cap=cfg.grpo.is_truncation)  # as GRPO.step builds it for k > 1

    class Rollouts:  # what Update.finish needs of a RolloutStream
        @staticmethod
        def run_while(refs) -> None:
            ray.wait(refs, num_returns=len(refs))

    groups = [LearnerGroup(model_dir, cfg.trainer) for _ in range(3)]
    try:
        for lg in groups:
            lg.configure(1e-2, 10)
        start = packed_weights(groups[0])
        manual = [groups[0].train_step(Rollout(half).train_batch(advantages), loss)
                  for half in (rollout.groups[:2], rollout.groups[2:])]
        moved = packed_weights(groups[0]) - start
        assert manual[1]["clip_frac"] > 0  # the sampling logprobs are not the policy's: the clip binds
        for lg, streamed in zip(groups[1:], (True, False)):
            update = Update(lg, loss, cfg, streamed=streamed, groups=len(rollout.groups))
            for g in rollout.groups:
                update.add(g)
            m = update.finish(Rollouts())
            assert m["updates"] == 2 and m["tokens"] == sum(x["tokens"] for x in manual)
            assert m["clip_frac"] == pytest.approx(
                sum(x["clip_frac"] * x["tokens"] for x in manual) / m["tokens"], rel=1e-4)
            other = packed_weights(lg) - start
            assert np.linalg.norm(other - moved) < 1e-3 * np.linalg.norm(moved), streamed
    finally:
        for lg in groups:
            lg.shutdown()


def test_the_asynchronous_loss_is_the_on_policy_loss_when_the_behaviour_policy_is_current() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    mb = {"adv": torch.tensor([1.0, -0.5, 0.25]), "mask": torch.ones(3, 5)}

    def grad(cap: float, behaviour: torch.Tensor) -> torch.Tensor:
        terms = GRPOLoss(is_cap=cap)(logp, dict(mb, sample_logprobs=behaviour), None)
        return torch.autograd.grad(terms.loss_sum, logits, retain_graph=True)[0], terms

    on_policy, _ = grad(0.0, logp.detach())
    same, _ = grad(2.0, logp.detach())
    torch.testing.assert_close(same, on_policy)  # mu == pi_theta: ratio 1, the on-policy gradient
    # mu far below pi_theta (ratio e): the clip holds A > 0 tokens, the cap (2) A < 0 ones: no gradient
    stale, terms = grad(2.0, logp.detach() - 1.0)
    assert torch.count_nonzero(stale) == 0
    assert float(terms.clipped_tokens) == 10.0 and float(terms.is_clipped_tokens) == 5.0
    # a little off-policy (ratio 1.1, inside the clip): every token's gradient weighted by the ratio
    near, terms = grad(2.0, logp.detach() - np.log(1.1))
    torch.testing.assert_close(near, 1.1 * on_policy)
    assert float(terms.clipped_tokens) == 0.0


@pytest.fixture(scope="module")
def cluster(model_dir: str):
    cfg = config()
    init_ray(cfg)
    c = Cluster(cfg, model_dir)
    yield cfg, c
    c.shutdown()


def behaviour_rate(cfg, cluster, prompts) -> float:
    """Share of 1024 fresh samples (temperature 1) the reward favours, from the served weights."""
    sampling = cluster.engines.sampling()
    return float(generate_and_score(cluster.engines, cluster.rewards, prompts[:8], 128, sampling).rewards.mean())


def test_grpo_learns_what_the_reward_favours_and_nothing_without_advantages(cluster, model_dir, monkeypatch) -> None:
    """No KL term: only the advantage-weighted policy gradient moves the weights. Zeroed
    advantages move nothing; the real ones make the rewarded behaviour more likely."""
    cfg, c = cluster
    prompts = custom_prompts(model_dir)
    c.learners.configure(cfg.trainer.lr, 100)
    c.sync_weights()
    start_hash, before = c.engines.weights_hash, behaviour_rate(cfg, c, prompts)

    import amray.trainer

    real = amray.trainer.rollout_advantages
    monkeypatch.setattr(amray.trainer, "rollout_advantages",
                        lambda *a, **k: {gid: np.zeros_like(v) for gid, v in real(*a, **k).items()})
    control = GRPO(cfg, c, PromptSampler(prompts, seed=1))
    for _ in range(2):
        _, m = control.step()
        assert m["group/zero_advantage_frac"] == 1.0
    assert c.engines.weights_hash == start_hash  # nothing moved

    monkeypatch.setattr(amray.trainer, "rollout_advantages", real)
    grpo = GRPO(cfg, c, PromptSampler(prompts, seed=1))
    rewards = [grpo.step()[1]["reward/mean"] for _ in range(12)]
    after = behaviour_rate(cfg, c, prompts)
    assert after > before + 0.15, (before, after, rewards)  # ~+0.3 here; the two estimates' noise ~0.02


def test_async_mode_keeps_every_sample_within_its_staleness(cluster, model_dir) -> None:
    cfg, c = cluster
    cfg = config("grpo.max_staleness=1")
    grpo = GRPO(cfg, c, PromptSampler(custom_prompts(model_dir), seed=2))
    ages = []
    for _ in range(4):
        before = c.weight_version
        rollout, m = grpo.step()
        ages += [before - s.weight_version for s in rollout.samples]
        assert m["async/staleness_max"] <= 1 and m["mode/max_staleness"] == 1
        assert 0.0 <= m["async/is_clipped_frac"] <= 1.0 and m["rollout/samples"] == 64
    assert max(ages) == 1 and min(ages) == 0  # the next step's samples were generated during training


def test_a_step_with_updates_per_batch_makes_that_many_updates(cluster, model_dir) -> None:
    cfg, c = cluster
    grpo = GRPO(config("grpo.updates_per_batch=2"), c, PromptSampler(custom_prompts(model_dir), seed=3))
    _, m = grpo.step()
    assert m["train/updates"] == 2 and m["rollout/samples"] == 64


def test_a_streamed_update_sends_groups_at_once_to_idle_learners_and_gathers_them_while_busy() -> None:
    """The first scored group goes to the learners at once, though far below a micro-batch; the
    groups scored while they are busy wait and go together once they are free."""
    from amray.trainer import Update

    init_ray(config())

    @ray.remote
    def busy(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    class Learners:
        share_prompts = True

        def __init__(self) -> None:
            self.calls: list[int] = []  # rows sent by each accumulate call
            self.seconds = 0.0

        def begin_update(self) -> None:
            pass

        def accumulate(self, batch, loss) -> list:
            self.calls.append(len(batch))
            return [busy.remote(self.seconds)]

    learners = Learners()
    update = Update(learners, GRPOLoss(), config("trainer.micro_batch_tokens=100000"), streamed=True)
    groups = synthetic_rollout(1).groups
    learners.seconds = 2.0
    update.add(groups[0])  # idle learners: sent alone
    update.add(groups[1])  # busy (2 s): kept
    update.add(groups[2])
    assert learners.calls == [4] and len(update.buffered) == 2
    ray.get(update.refs)
    learners.seconds = 0.0
    update.add(groups[3])  # free again: the three waiting groups go together
    assert learners.calls == [4, 12] and not update.buffered


def test_landed_samples_go_to_the_rewards_one_call_per_group_and_each_counts_once() -> None:
    """Samples that land together are scored in one call per group (a group's n samples of one
    request land together), never several groups in one call (a batch resolves as a whole, so a
    slow row would hold back another group); a sample landing twice is scored once."""
    from amray.engine import Request
    from amray.rewards.types import RewardResult
    from amray.rollout import RolloutStream

    class Rewards:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []  # the responses of each submit_many call

        def submit_many(self, rows: list[dict]) -> int:
            self.calls.append([r["response"] for r in rows])
            return len(self.calls) - 1

        def poll(self, refs: list[int], timeout_s: float = 0.0) -> list:
            return [(ref, [RewardResult(float(text.endswith("1")), {}) for text in self.calls[ref]]) for ref in refs]

    class Engines:
        def submit(self, requests) -> None:
            pass

        def stats(self) -> dict:
            return {}

    rewards = Rewards()
    stream = RolloutStream(Engines(), rewards)
    prompts = [Prompt({"id": f"p{i}"}, [1, 2, 3]) for i in range(2)]
    stream.launch("s", prompts, 3, {})
    scoring = stream.scorings["s"]
    gids = list(scoring.size)

    def sample(g: int, s: int) -> Sample:
        return Sample(gids[g], s, np.array([5], np.int64), np.zeros(1, np.float32), f"{g}.{s}", "stop", 0)

    stream._score([sample(0, 0), sample(1, 0), sample(0, 1), sample(0, 2)])
    stream._score([sample(0, 1), sample(1, 1), sample(1, 2)])  # 0.1 again: counted once
    assert rewards.calls == [["0.0", "0.1", "0.2"], ["1.0"], ["1.1", "1.2"]]
    scoring.poll()
    assert scoring.complete and scoring.landed == 6
    assert [scoring.groups[gid].rewards.tolist() for gid in gids] == [[0.0, 1.0, 0.0]] * 2
