"""GRPO math, as AM-Thinking-v1 runs it: group-normalised advantages, PPO-clip token loss.

Pure tensor functions; the learner calls `policy_loss`, the driver calls `group_advantages`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, truncated: torch.Tensor | None = None,
                     eps: float = 1e-6, zero_truncated: bool = True) -> torch.Tensor:
    """A_i = (r_i - mean(group)) / (std(group) + eps), one value per sample.

    `rewards` is laid out group by group (prompt 0's samples first). A group whose rewards are
    all equal carries no signal and gets exactly zero. Responses cut at the length limit get
    zero advantage (AM-Thinking stage 1: neither rewarded nor punished for running long).
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, unbiased=True) if group_size > 1 else torch.zeros_like(mean)
    adv = (r - mean) / (std + eps)
    adv = torch.where(std > 0, adv, torch.zeros_like(adv)).view(-1)
    if truncated is not None and zero_truncated:
        adv = torch.where(truncated.bool().view(-1), torch.zeros_like(adv), adv)
    return adv


@dataclass
class LossTerms:
    loss_sum: torch.Tensor  # sum over response tokens of the per-token loss (for token-mean)
    clipped_tokens: torch.Tensor  # how many tokens the clip was active on
    kl_sum: torch.Tensor


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_low: float = 0.2, clip_high: float = 0.2, ref_logprobs: torch.Tensor | None = None,
                kl_coef: float = 0.0) -> LossTerms:
    """PPO-clip per token, summed over response tokens; the caller divides by the batch's
    token count (token-mean over the whole batch, as in DAPO / AM-Thinking).

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
    return LossTerms((per_token * mask).sum(), clipped_tokens, kl_sum)
