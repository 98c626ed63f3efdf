"""GRPO math: group normalisation, zero-variance groups, truncation zeroing, clipping, token-mean."""

import numpy as np
import pytest
import torch

from amray.batch import Group, Prompt, Rollout, Sample
from amray.grpo import group_advantages, policy_loss, rollout_advantages
from amray.learner import warmup_cosine
from amray.microbatch import micro_batches


def rollout_of(groups: dict[str, list[float]], truncated: dict[str, list[bool]] | None = None) -> Rollout:
    """A rollout whose groups carry the given rewards (and truncation), in the given order."""
    out = []
    for gid, rewards in groups.items():
        cut = (truncated or {}).get(gid, [False] * len(rewards))
        samples = [Sample(gid, i, np.arange(2 + i), np.zeros(2 + i, np.float32), "x", "length" if c else "stop", 0)
                   for i, c in enumerate(cut)]
        out.append(Group(gid, Prompt({"id": gid}, [1, 2]), samples, np.asarray(rewards, np.float32)))
    return Rollout(out)


def test_group_advantages_normalise_within_each_group():
    adv = rollout_advantages(rollout_of({"a": [1.0, 0.0, 0.0, 0.0], "b": [1.0, 1.0, 0.0, 1.0]}))
    g0 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    expected0 = (g0 - g0.mean()) / (g0.std() + 1e-6)
    torch.testing.assert_close(torch.from_numpy(adv["a"]), expected0)
    # each group is centred on its own mean, not the batch mean
    assert abs(float(adv["b"].sum())) < 1e-5 and adv["b"][0] > 0 > adv["b"][2]


def test_advantages_follow_group_ids_not_positions():
    """Groups are addressed by id: reordering the groups of a rollout moves nothing between them."""
    groups = {"p": [1.0, 0.0, 0.0], "q": [0.0, 0.0, 1.0], "r": [1.0, 1.0, 0.0]}
    adv = rollout_advantages(rollout_of(groups))
    shuffled = rollout_of({k: groups[k] for k in ("r", "p", "q")})
    again = rollout_advantages(shuffled)
    for gid in groups:
        np.testing.assert_array_equal(adv[gid], again[gid])
    batch = shuffled.train_batch(again)  # rows follow the rollout's own group order
    np.testing.assert_array_equal(batch.advantages, np.concatenate([again["r"], again["p"], again["q"]]))
    assert [len(t) for t in batch.tokens] == [2 + 2 + i for _ in range(3) for i in range(3)]


def test_all_equal_groups_get_exactly_zero():
    adv = rollout_advantages(rollout_of({"a": [1.0] * 4, "b": [0.0] * 4, "c": [0.0, 0.0, 0.0, 1.0]}), eps=1e-12)
    assert np.array_equal(np.concatenate([adv["a"], adv["b"]]), np.zeros(8))  # tiny eps: no 0/eps blow-up
    assert adv["c"][3] > 0


def test_truncated_responses_get_zero_advantage():
    rewards = torch.tensor([0.0, 1.0, 0.0, 1.0])
    truncated = torch.tensor([True, False, False, False])
    adv = group_advantages(rewards, truncated)
    assert adv[0] == 0 and adv[2] < 0 and adv[1] > 0
    kept = group_advantages(rewards, truncated, zero_truncated=False)
    assert kept[0] < 0
    from_rollout = rollout_advantages(rollout_of({"g": [0.0, 1.0, 0.0, 1.0]}, {"g": [True, False, False, False]}))
    np.testing.assert_allclose(from_rollout["g"], adv.numpy())


def test_advantages_must_match_their_group():
    rollout = rollout_of({"a": [1.0, 0.0]})
    with pytest.raises(ValueError, match="group a: 3 advantages for 2 samples"):
        rollout.train_batch({"a": np.zeros(3, np.float32)})


def test_policy_loss_on_policy_gradient_is_advantage_weighted_logprob():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    terms = policy_loss(logp, logp.detach(), torch.tensor([2.0]), mask)
    terms.loss_sum.backward()
    # ratio = 1: d/dlogp of -A * ratio = -A on masked tokens, 0 on padding
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.0, -2.0, 0.0]]))
    assert float(terms.clipped_tokens) == 0


def test_policy_loss_clips_ratio_outside_trust_region():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5]])).requires_grad_()  # ratios 1.5 and 0.5
    mask = torch.ones(1, 2)
    terms = policy_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.2)
    # positive advantage: ratio 1.5 clipped to 1.2 (no gradient); ratio 0.5 unclipped
    torch.testing.assert_close(terms.loss_sum, torch.tensor(-(1.2 + 0.5)))
    terms.loss_sum.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] != 0
    assert float(terms.clipped_tokens) == 1
    # negative advantage: ratio 0.5 is clipped at 0.8, ratio 1.5 is not
    logp2 = logp.detach().clone().requires_grad_()
    neg = policy_loss(logp2, old, torch.tensor([-1.0]), mask)
    torch.testing.assert_close(neg.loss_sum, torch.tensor(1.5 + 0.8))
    neg.loss_sum.backward()
    assert logp2.grad[0, 1] == 0 and logp2.grad[0, 0] != 0


def test_k3_kl_is_zero_at_reference_and_positive_away():
    logp = torch.tensor([[-1.0, -1.0]])
    mask = torch.ones(1, 2)
    same = policy_loss(logp, logp, torch.tensor([0.0]), mask, ref_logprobs=logp.clone(), kl_coef=0.1)
    assert float(same.kl_sum) == 0
    away = policy_loss(logp, logp, torch.tensor([0.0]), mask, ref_logprobs=logp - 0.5, kl_coef=0.1)
    assert float(away.kl_sum) > 0 and float(away.loss_sum) > 0


def test_micro_batches_respect_token_budget_and_cover_all_rows():
    lengths = [10, 50, 20, 20, 5, 40, 30, 70]
    padded = micro_batches(lengths, token_budget=60, packed=False)
    packed = micro_batches(lengths, token_budget=60)
    for mbs in (padded, packed):
        assert sorted(i for mb in mbs for i in mb) == list(range(len(lengths)))
    for mb in padded:
        assert max(lengths[i] for i in mb) * len(mb) <= 60 or len(mb) == 1
    for mb in packed:  # total tokens within the budget; a row past it alone
        assert sum(lengths[i] for i in mb) <= 60 or len(mb) == 1
    assert len(packed) == 4 < len(padded)  # the 70-token row alone, the other 175 tokens in three of 60


def test_warmup_then_cosine_schedule():
    assert warmup_cosine(0, 100, 10, 0.1) == 0.1
    assert warmup_cosine(9, 100, 10, 0.1) == 1.0
    assert abs(warmup_cosine(100, 100, 10, 0.1) - 0.1) < 1e-9
    assert warmup_cosine(10, 100, 10, 0.1) == 1.0
