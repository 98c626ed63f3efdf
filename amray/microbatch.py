"""From a learner rank's rows to micro-batches: which rows go together, and the tensors of one.

Packed (`trainer.packing`, the default): rows are laid end to end in one sequence of at most
`trainer.micro_batch_tokens` tokens; position ids restart at every row and attention stays inside
each (`cu_seqlens`), so no token is padding. Padded: rows right-padded to the longest of their
micro-batch, rows x longest within the budget (what packing saves is measured against this).

A micro-batch scores only the positions whose next token is trained (`predict`, flat indices into
the [B, L] tokens; loss-mask positions: response tokens for GRPO, assistant tokens for SFT). Its
per-token tensors are columns [N, 1]: the losses broadcast one advantage per row, and here every
trained token is its own row, carrying its row's advantage.

Every rank runs the same number of micro-batches, because FSDP's collectives run per
forward/backward: a rank with fewer rows runs `empty_micro_batch`es, which join the collectives
and train nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from amray.batch import TrainBatch


def pack_plan(lengths: list[int], token_budget: int) -> list[list[int]]:
    """First-fit decreasing: rows (longest first) into the first micro-batch with room, total
    tokens within the budget; a row longer than the budget is a micro-batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    used: list[int] = []
    for i in order:
        for b, u in enumerate(used):
            if u + lengths[i] <= token_budget:
                batches[b].append(i)
                used[b] += lengths[i]
                break
        else:
            batches.append([i])
            used.append(lengths[i])
    return batches


def pad_plan(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Greedy by length: each micro-batch's padded size (rows x longest) fits the budget."""
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


def micro_batches(lengths: list[int], token_budget: int, packed: bool = True) -> list[list[int]]:
    """Row indices of each micro-batch."""
    return (pack_plan if packed else pad_plan)(lengths, token_budget)


def micro_batch(batch: TrainBatch, idx: list[int], packed: bool, device: torch.device) -> dict[str, torch.Tensor | int]:
    """Rows `idx` as model inputs (tokens, position_ids [B, L]; cu_seqlens when packed) and, per
    trained token, predict / targets [N], mask / sample_logprobs [N, 1], adv [N]."""
    lengths = [len(batch.tokens[i]) for i in idx]
    width = sum(lengths) if packed else max(lengths)
    rows = 1 if packed else len(idx)
    tokens = np.zeros((rows, width), np.int64)
    positions = np.zeros((rows, width), np.int64)
    predict, mask, slp, adv = [], [], [], []
    offset = 0
    for r, (i, n) in enumerate(zip(idx, lengths)):
        row, start = (0, offset) if packed else (r, 0)
        tokens[row, start:start + n] = batch.tokens[i]
        positions[row, start:start + n] = np.arange(n)
        weights = np.asarray(batch.loss_mask[i][1:], np.float32)
        at = np.flatnonzero(weights)  # position p predicts token p + 1
        predict.append(row * width + start + at)
        mask.append(weights[at])
        slp.append(np.zeros(len(at), np.float32) if batch.sample_logprobs is None
                   else np.asarray(batch.sample_logprobs[i][1:], np.float32)[at])
        adv.append(np.full(len(at), 0.0 if batch.advantages is None else batch.advantages[i], np.float32))
        offset += n
    flat = np.concatenate(predict)
    out = {"tokens": torch.from_numpy(tokens), "position_ids": torch.from_numpy(positions),
           "predict": torch.from_numpy(flat), "targets": torch.from_numpy(tokens.reshape(-1)[flat + 1]),
           "mask": torch.from_numpy(np.concatenate(mask)).unsqueeze(-1),
           "sample_logprobs": torch.from_numpy(np.concatenate(slp)).unsqueeze(-1),
           "adv": torch.from_numpy(np.concatenate(adv))}
    if packed:
        out["cu_seqlens"] = torch.tensor(np.cumsum([0, *lengths]), dtype=torch.int32)
    out = {k: v.to(device) for k, v in out.items()}
    out["max_seqlen"] = max(lengths)
    return out


def empty_micro_batch(device: torch.device) -> dict[str, torch.Tensor | int]:
    """A two-token row with no trained token: a forward/backward that trains nothing."""
    none = torch.zeros(0, dtype=torch.long, device=device)
    return {"tokens": torch.zeros(1, 2, dtype=torch.long, device=device),
            "position_ids": torch.arange(2, device=device).unsqueeze(0), "predict": none, "targets": none,
            "mask": torch.zeros(0, 1, device=device), "sample_logprobs": torch.zeros(0, 1, device=device),
            "adv": torch.zeros(0, device=device), "max_seqlen": 2}


def policy_inputs(mb: dict[str, torch.Tensor | int]) -> dict[str, torch.Tensor | int | None]:
    """The arguments of `Policy.forward` in a micro-batch (all but the temperature)."""
    return {"tokens": mb["tokens"], "position_ids": mb["position_ids"], "predict": mb["predict"],
            "targets": mb["targets"], "cu_seqlens": mb.get("cu_seqlens"), "max_seqlen": mb["max_seqlen"]}
