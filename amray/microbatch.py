"""From a learner rank's rows to micro-batches: which rows go together, and the tensors of one.

Packed (`trainer.packing`, the default): rows are laid end to end in one sequence of at most
`trainer.micro_batch_tokens` tokens; position ids restart at every row and attention stays inside
each (`cu_seqlens`), so no token is padding. Padded: rows right-padded to the longest of their
micro-batch, rows x longest within the budget (what packing saves is measured against this).

A micro-batch scores only the positions whose next token is trained (`predict`, flat indices into
the [B, L] tokens; loss-mask positions: response tokens for GRPO, assistant tokens for SFT). Its
per-token tensors are columns [N, 1]: the losses broadcast one advantage per row, and here every
trained token is its own row, carrying its row's advantage.

Shared prompts (`trainer.share_prompts`, with packing): rows whose tokens before their first trained
token are the same (a GRPO group's samples all repeat their prompt) are laid out once as that
prompt followed by each row's rest, [prompt, rest 1, rest 2, ...]. The prompt attends causally to
itself; each rest attends to the whole prompt and causally to its own tokens, never to another
rest (`segments`, read by `policy.sdpa_varlen`); its position ids go on from the prompt's length,
and its first token is predicted from the prompt's last position. Every trained position sees
exactly the tokens it sees in its own row, so logprobs and gradients are those of the rows laid
out one by one, while the prompt is computed once instead of once per sample.

Every rank runs the same number of micro-batches, because FSDP's collectives run per
forward/backward: a rank with fewer rows runs `empty_micro_batch`es, which join the collectives
and train nothing.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from amray.batch import TrainBatch

Prefix = tuple[int, bytes] | None
"""A row's shareable prompt: (length, its tokens' bytes), or None where it shares nothing."""


def prefixes(batch: TrainBatch) -> list[Prefix]:
    """Each row's tokens before its first trained token (None for a row with no such tokens)."""
    out: list[Prefix] = []
    for tokens, mask in zip(batch.tokens, batch.loss_mask):
        trained = np.flatnonzero(np.asarray(mask)[1:])  # position p trains token p + 1
        n = int(trained[0]) + 1 if len(trained) else 0
        out.append((n, np.asarray(tokens[:n], np.int64).tobytes()) if n else None)
    return out


def _rows_by_prompt(lengths: list[int], shared: list[Prefix]) -> list[int]:
    """Row order for the greedy plans: longest first; with shared prompts, the rows of one prompt
    together, the biggest prompt's rows (prompt once plus the rests) first, longest first within."""
    if not any(shared):
        return sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    units: dict[object, list[int]] = defaultdict(list)
    for i, pre in enumerate(shared):
        units[pre if pre is not None else ("row", i)].append(i)

    def size(rows: list[int]) -> int:
        n = shared[rows[0]][0] if shared[rows[0]] is not None else 0
        return n + sum(lengths[i] - n for i in rows)

    return [i for rows in sorted(units.values(), key=size, reverse=True)
            for i in sorted(rows, key=lambda i: lengths[i], reverse=True)]


def pack_plan(lengths: list[int], token_budget: int, shared: list[Prefix] | None = None) -> list[list[int]]:
    """First-fit decreasing: rows (longest first) into the first micro-batch with room, total
    tokens within the budget; a row longer than the budget is a micro-batch of its own. With
    `shared` prefixes, a row costs only its rest in a micro-batch that already holds its prompt,
    and such a micro-batch is tried first."""
    shared = shared or [None] * len(lengths)
    order = _rows_by_prompt(lengths, shared)
    batches: list[list[int]] = []
    used: list[int] = []
    held: list[set] = []
    for i in order:
        pre = shared[i]
        first = [b for b in range(len(batches)) if pre is not None and pre in held[b]]
        for b in first + [b for b in range(len(batches)) if b not in first]:
            cost = lengths[i] - pre[0] if b in first else lengths[i]
            if used[b] + cost <= token_budget:
                batches[b].append(i)
                used[b] += cost
                held[b].add(pre)
                break
        else:
            batches.append([i])
            used.append(lengths[i])
            held.append({pre})
    return batches


def balance(lengths: list[int], parts: int, shared: list[Prefix] | None = None) -> list[list[int]]:
    """Rows split into `parts` (learner ranks) balanced by tokens: each row, longest first, to the
    part it loads least, where a part that already holds the row's prompt pays only its rest."""
    shared = shared or [None] * len(lengths)
    order = _rows_by_prompt(lengths, shared)
    out: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    held: list[set] = [set() for _ in range(parts)]
    for i in order:
        pre = shared[i]
        cost = [lengths[i] - pre[0] if pre is not None and pre in held[r] else lengths[i] for r in range(parts)]
        r = min(range(parts), key=lambda r: (load[r] + cost[r], r))
        out[r].append(i)
        load[r] += cost[r]
        held[r].add(pre)
    return out


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


def micro_batches(lengths: list[int], token_budget: int, packed: bool = True,
                  shared: list[Prefix] | None = None) -> list[list[int]]:
    """Row indices of each micro-batch (`shared`: the rows' prefixes, packed only)."""
    return pack_plan(lengths, token_budget, shared) if packed else pad_plan(lengths, token_budget)


def _layout(batch: TrainBatch, idx: list[int], shared: list[Prefix] | None) -> tuple[
        list[tuple[int, int, tuple[int, ...]]], list[np.ndarray]]:
    """Packed layout of rows `idx`: segments (start, prompt length, rest lengths; a row alone is
    (start, length, ())) and, per row in `idx` order, where each of its positions lands."""
    units: dict[object, list[int]] = defaultdict(list)  # a prompt's rows, or a row alone
    for i in idx:
        units[shared[i] if shared and shared[i] is not None else ("alone", i)].append(i)
    segments, where, offset = [], {}, 0
    for key, rows in units.items():
        if len(rows) == 1:
            n = len(batch.tokens[rows[0]])
            segments.append((offset, n, ()))
            where[rows[0]] = offset + np.arange(n)
            offset += n
            continue
        n0 = key[0]  # several rows share only a prompt: (length, tokens)
        rest_at = offset + n0
        for i in rows:
            rest = len(batch.tokens[i]) - n0
            where[i] = np.concatenate([offset + np.arange(n0), rest_at + np.arange(rest)])
            rest_at += rest
        segments.append((offset, n0, tuple(len(batch.tokens[i]) - n0 for i in rows)))
        offset = rest_at
    return segments, [where[i] for i in idx]


def micro_batch(batch: TrainBatch, idx: list[int], packed: bool, device: torch.device,
                shared: list[Prefix] | None = None) -> dict[str, torch.Tensor | int]:
    """Rows `idx` as model inputs (tokens, position_ids [B, L]; cu_seqlens when packed, and
    `segments` where rows share their prompt: `shared`, the `prefixes` of the batch's rows) and,
    per trained token, predict / targets [N], mask / sample_logprobs [N, 1], adv [N]."""
    lengths = [len(batch.tokens[i]) for i in idx]
    if packed:
        segments, where = _layout(batch, idx, shared)
        width = segments[-1][0] + segments[-1][1] + sum(segments[-1][2])
    else:
        segments, width = [], max(lengths)
        where = [r * width + np.arange(n) for r, n in enumerate(lengths)]
    rows = 1 if packed else len(idx)
    tokens = np.zeros(rows * width, np.int64)
    positions = np.zeros(rows * width, np.int64)
    predict, targets, mask, slp, adv = [], [], [], [], []
    for i, n, at_flat in zip(idx, lengths, where):
        tokens[at_flat] = batch.tokens[i]
        positions[at_flat] = np.arange(n)
        weights = np.asarray(batch.loss_mask[i][1:], np.float32)
        at = np.flatnonzero(weights)  # position p predicts token p + 1
        predict.append(at_flat[at])
        targets.append(np.asarray(batch.tokens[i], np.int64)[at + 1])
        mask.append(weights[at])
        slp.append(np.zeros(len(at), np.float32) if batch.sample_logprobs is None
                   else np.asarray(batch.sample_logprobs[i][1:], np.float32)[at])
        adv.append(np.full(len(at), 0.0 if batch.advantages is None else batch.advantages[i], np.float32))
    out = {"tokens": torch.from_numpy(tokens.reshape(rows, width)),
           "position_ids": torch.from_numpy(positions.reshape(rows, width)),
           "predict": torch.from_numpy(np.concatenate(predict)), "targets": torch.from_numpy(np.concatenate(targets)),
           "mask": torch.from_numpy(np.concatenate(mask)).unsqueeze(-1),
           "sample_logprobs": torch.from_numpy(np.concatenate(slp)).unsqueeze(-1),
           "adv": torch.from_numpy(np.concatenate(adv))}
    if packed:
        bounds = [start for start, _, _ in segments] + [width]
        out["cu_seqlens"] = torch.tensor(bounds, dtype=torch.int32)
    out = {k: v.to(device) for k, v in out.items()}
    out["max_seqlen"] = max(lengths)
    if any(rests for _, _, rests in segments):
        out["segments"] = tuple(segments)
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
            "targets": mb["targets"], "cu_seqlens": mb.get("cu_seqlens"), "max_seqlen": mb["max_seqlen"],
            "segments": mb.get("segments")}
