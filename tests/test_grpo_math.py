"""GRPO math: group normalisation, zero-variance groups, truncation zeroing, clipping, token-mean."""

import torch

from amray.grpo import group_advantages, policy_loss
from amray.learner import micro_batches, warmup_cosine


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    adv = group_advantages(rewards, group_size=4)
    g0 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    expected0 = (g0 - g0.mean()) / (g0.std() + 1e-6)
    torch.testing.assert_close(adv[:4], expected0)
    # each group is centred on its own mean, not the batch mean
    assert abs(float(adv[4:].sum())) < 1e-5 and float(adv[4]) > 0 > float(adv[6])


def test_all_equal_groups_get_exactly_zero():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    adv = group_advantages(rewards, group_size=4, eps=1e-12)  # tiny eps: no accidental 0/eps blow-up
    assert torch.equal(adv[:8], torch.zeros(8))
    assert float(adv[11]) > 0


def test_truncated_responses_get_zero_advantage():
    rewards = torch.tensor([0.0, 1.0, 0.0, 1.0])
    truncated = torch.tensor([True, False, False, False])
    adv = group_advantages(rewards, 4, truncated)
    assert adv[0] == 0 and adv[2] < 0 and adv[1] > 0
    kept = group_advantages(rewards, 4, truncated, zero_truncated=False)
    assert kept[0] < 0


def test_rewards_must_fill_whole_groups():
    try:
        group_advantages(torch.zeros(6), 4)
    except ValueError as e:
        assert "groups of 4" in str(e)
    else:
        raise AssertionError("expected ValueError")


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
    lengths = [10, 50, 20, 20, 5, 40, 30]
    mbs = micro_batches(lengths, token_budget=60)
    assert sorted(i for mb in mbs for i in mb) == list(range(len(lengths)))
    for mb in mbs:
        assert max(lengths[i] for i in mb) * len(mb) <= 60 or len(mb) == 1


def test_warmup_then_cosine_schedule():
    assert warmup_cosine(0, 100, 10, 0.1) == 0.1
    assert warmup_cosine(9, 100, 10, 0.1) == 1.0
    assert abs(warmup_cosine(100, 100, 10, 0.1) - 0.1) < 1e-9
    assert warmup_cosine(10, 100, 10, 0.1) == 1.0
