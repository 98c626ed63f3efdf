"""GRPO math, as AM-Thinking-v1 runs it: group-normalised advantages, PPO-clip token loss.

Pure tensor functions and the loss object the learner ranks apply to each micro-batch; the
driver calls `rollout_advantages`, the learner calls the `GRPOLoss` it is given.

Where this departs from the textbook: the paper (stage 1 and 2) is strictly on-policy with one
optimizer update per rollout batch, so the PPO ratio is exactly 1 when the loss is computed and
the clip never binds (`train/clip_frac` is 0); the gradient is the plain policy gradient of the
token-mean advantage-weighted log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from amray.batch import Rollout


def group_advantages(rewards: torch.Tensor, truncated: torch.Tensor | None = None, eps: float = 1e-6,
                     zero_truncated: bool = True) -> torch.Tensor:
    """A_i = (r_i - mean(group)) / (std(group) + eps) for the samples of one group.

    A group whose rewards are all equal carries no signal and gets exactly zero. Responses cut at
    the length limit get zero advantage (AM-Thinking stage 1: neither rewarded nor punished for
    running long)."""
    r = rewards.float().view(-1)
    mean = r.mean()
    std = r.std(unbiased=True) if r.numel() > 1 else torch.zeros(())
    adv = torch.where(std > 0, (r - mean) / (std + eps), torch.zeros_like(r))
    if truncated is not None and zero_truncated:
        adv = torch.where(truncated.bool().view(-1), torch.zeros_like(adv), adv)
    return adv


def rollout_advantages(rollout: Rollout, eps: float = 1e-6, zero_truncated: bool = True) -> dict[str, np.ndarray]:
    """Advantages of every group of a rollout, keyed by group id."""
    return {g.id: group_advantages(torch.from_numpy(g.rewards), torch.from_numpy(g.truncated), eps,
                                   zero_truncated).numpy() for g in rollout.groups}


@dataclass
class LossTerms:
    """Sums over the micro-batch's trained tokens; the learner divides by the batch's token count
    (token-mean over the whole batch, as in DAPO / AM-Thinking)."""

    loss_sum: torch.Tensor
    clipped_tokens: torch.Tensor
    kl_sum: torch.Tensor
    mismatch_sum: torch.Tensor
    """|learner logprob - vLLM sampling logprob|: near 0 on-policy; large means a broken sync."""


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_low: float = 0.2, clip_high: float = 0.2, ref_logprobs: torch.Tensor | None = None,
                kl_coef: float = 0.0) -> LossTerms:
    """PPO-clip per token, summed over response tokens.

    logprobs, old_logprobs, mask: [B, T]; advantages: [B] (one per sequence, broadcast to tokens).
    Optional k3 KL to a frozen reference: exp(ref - logp) - (ref - logp) - 1 (Schulman's estimator).
    """
    adv = advantages.view(-1, 1).to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    mask = mask.to(logprobs.dtype)
    kl_sum = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    if ref_logprobs is not None and kl_coef > 0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + kl_coef * kl
        kl_sum = (kl * mask).sum().detach()
    clipped_tokens = ((clipped < unclipped).to(mask.dtype) * mask).sum().detach()
    return LossTerms((per_token * mask).sum(), clipped_tokens, kl_sum, torch.zeros((), device=logprobs.device))


@dataclass(frozen=True)
class GRPOLoss:
    """The GRPO objective of a micro-batch (`mb`: tokens, mask, adv, sample_logprobs)."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    temperature: float = 1.0
    """The sampling temperature: logprobs are those of the distribution sampled from."""

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0

    def __call__(self, logp: torch.Tensor, mb: dict[str, torch.Tensor], ref_logp: torch.Tensor | None) -> LossTerms:
        # Strict on-policy, one update per batch: the old policy is the current one (ratio 1).
        terms = policy_loss(logp, logp.detach(), mb["adv"], mb["mask"], self.clip_low, self.clip_high,
                            ref_logp, self.kl_coef)
        with torch.no_grad():
            terms.mismatch_sum = ((logp.detach() - mb["sample_logprobs"]).abs() * mb["mask"]).sum()
        return terms
