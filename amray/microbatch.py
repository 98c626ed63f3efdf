"""From a learner rank's rows to micro-batch tensors, and the token logprobs of a micro-batch.

Micro-batches are planned by token budget (`trainer.micro_batch_tokens`, padded rows x longest);
every rank runs the same number of them, because FSDP's collectives run per forward/backward: a
rank with fewer rows runs `empty_micro_batch`es, which join the collectives and train nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from amray.batch import TrainBatch


def micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Greedy packing by length: each micro-batch's padded size (rows x longest) fits the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > token_budget:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def pad(batch: TrainBatch, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    """Rows `idx` right-padded to the longest: tokens, attention mask, and per predicted position
    (1..T-1) the loss mask and sampling logprob; one advantage per row."""
    T = max(len(batch.tokens[i]) for i in idx)
    B = len(idx)
    tokens = torch.zeros(B, T, dtype=torch.long)
    attn = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T - 1)
    slp = torch.zeros(B, T - 1)
    for r, i in enumerate(idx):
        n = len(batch.tokens[i])
        tokens[r, :n] = torch.as_tensor(np.asarray(batch.tokens[i], dtype=np.int64))
        attn[r, :n] = 1
        mask[r, : n - 1] = torch.as_tensor(np.asarray(batch.loss_mask[i][1:], dtype=np.float32))
        if batch.sample_logprobs is not None:
            slp[r, : n - 1] = torch.as_tensor(np.asarray(batch.sample_logprobs[i][1:], dtype=np.float32))
    adv = torch.zeros(B) if batch.advantages is None else torch.tensor(batch.advantages[idx], dtype=torch.float32)
    out = {"tokens": tokens, "attn": attn, "mask": mask, "sample_logprobs": slp, "adv": adv}
    return {k: v.to(device) for k, v in out.items()}


def empty_micro_batch(device: torch.device) -> dict[str, torch.Tensor]:
    """A two-token row with an all-zero loss mask: a forward/backward that trains nothing."""
    return {"tokens": torch.zeros(1, 2, dtype=torch.long, device=device),
            "attn": torch.ones(1, 2, dtype=torch.long, device=device),
            "mask": torch.zeros(1, 1, device=device), "sample_logprobs": torch.zeros(1, 1, device=device),
            "adv": torch.zeros(1, device=device)}


def token_logprobs(model: torch.nn.Module, tokens: torch.Tensor, attn: torch.Tensor, temperature: float) -> torch.Tensor:
    """logprob of tokens[:, t] given tokens[:, :t], at positions 1..T-1 -> [B, T-1]."""
    logits = model(input_ids=tokens, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
