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
    is_clipped_tokens: torch.Tensor | None = None
    """Tokens whose importance weight hit its cap (asynchronous mode only)."""

    def sums(self, mask: torch.Tensor) -> dict[str, float]:
        """What the learner adds up over a whole update; each is reported as its token-mean."""
        out = {"loss": float(self.loss_sum.detach()), "clip_frac": float(self.clipped_tokens),
               "kl": float(self.kl_sum), "logprob_mismatch": float(self.mismatch_sum), "tokens": float(mask.sum())}
        if self.is_clipped_tokens is not None:
            out["is_clipped_frac"] = float(self.is_clipped_tokens)
        return out


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_low: float = 0.2, clip_high: float = 0.2, ref_logprobs: torch.Tensor | None = None,
                kl_coef: float = 0.0, dual_clip: float = 0.0) -> LossTerms:
    """PPO-clip per token, summed over response tokens.

    logprobs, old_logprobs, mask: [B, T]; advantages: [B] (one per sequence, broadcast to tokens).
    `dual_clip` > 1: for negative advantages the surrogate is also bounded below by dual_clip * A
    (a ratio far above 1 on a bad token cannot dominate the update; Ye et al. 2020).
    Optional k3 KL to a frozen reference: exp(ref - logp) - (ref - logp) - 1 (Schulman's estimator).
    """
    adv = advantages.view(-1, 1).to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    surrogate = torch.minimum(unclipped, clipped)
    mask = mask.to(logprobs.dtype)
    capped = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    if dual_clip > 1.0:
        bound = dual_clip * adv
        binds = (adv < 0) & (surrogate < bound)
        surrogate = torch.where(binds, bound, surrogate)
        capped = (binds.to(mask.dtype) * mask).sum().detach()
    per_token = -surrogate
    kl_sum = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    if ref_logprobs is not None and kl_coef > 0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + kl_coef * kl
        kl_sum = (kl * mask).sum().detach()
    clipped_tokens = ((clipped < unclipped).to(mask.dtype) * mask).sum().detach()
    return LossTerms((per_token * mask).sum(), clipped_tokens, kl_sum, torch.zeros((), device=logprobs.device),
                     capped if dual_clip > 1.0 else None)


@dataclass(frozen=True)
class GRPOLoss:
    """The GRPO objective of a micro-batch (`mb`: tokens, mask, adv, sample_logprobs).

    On-policy (the paper; `is_cap` 0): one update per batch, so the old policy is the current one,
    the ratio is exactly 1 and the clip never binds (`train/clip_frac` 0): the plain policy gradient
    of the token-mean advantage-weighted log-likelihood.

    Asynchronous (grpo.max_staleness >= 1, `is_cap` = grpo.is_truncation > 1): samples come from a
    behaviour policy mu up to k weight versions old, whose per-token logprobs vLLM reported as it
    sampled. mu is the old policy of the clipped surrogate, which makes it a truncated
    importance-sampling estimator of the on-policy gradient:

        g = E_{y ~ mu} [ sum_t grad min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A) ],
        r_t = pi_theta(y_t | y_<t) / mu(y_t | y_<t)

    with, for A < 0, the surrogate bounded below by is_cap * A (dual clip), so no token's weight
    exceeds is_cap. `train/clip_frac` is the share of tokens the clip holds, `async/is_clipped_frac`
    the share the cap holds. With mu the current policy (staleness 0) r_t = 1 and it is the
    on-policy loss."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    temperature: float = 1.0
    """The sampling temperature: logprobs are those of the distribution sampled from."""
    is_cap: float = 0.0

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0

    def __call__(self, logp: torch.Tensor, mb: dict[str, torch.Tensor], ref_logp: torch.Tensor | None) -> LossTerms:
        behaviour = mb["sample_logprobs"]
        old = behaviour if self.is_cap > 0 else logp.detach()
        terms = policy_loss(logp, old, mb["adv"], mb["mask"], self.clip_low, self.clip_high, ref_logp, self.kl_coef,
                            dual_clip=self.is_cap)
        with torch.no_grad():
            terms.mismatch_sum = ((logp.detach() - behaviour).abs() * mb["mask"]).sum()
        return terms
