"""SFT: chat conversations -> learner rows with loss on assistant tokens only, the NLL objective,
and the epoch loop (the CPU demo's warm start and `jobs/sft.py`).

AM-Thinking-v1's recipe (configs/am_thinking_32b_sft.yaml): loss on the final assistant turn of
each conversation only (`sft.final_turn_only`), rows cut at 32k tokens (`sft.max_length`), a
global batch of about 2M tokens (`sft.batch_tokens`), warmup over 5% of the steps
(`sft.warmup_ratio`), lr 8e-5, 2 epochs; the learner packs each micro-batch's rows end to end
(`trainer.micro_batch_tokens`, `trainer.packing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from amray.batch import TrainBatch
from amray.config import Config, SFTConfig
from amray.grpo import LossTerms
from amray.prompts import chat_ids


@dataclass
class SFTRows:
    """Conversations as learner rows, and what preparing them did (for the job's summary)."""

    batch: TrainBatch
    conversations: int
    truncated: int = 0
    """Rows cut at sft.max_length."""
    dropped: int = 0
    """Conversations left with no trained token (no assistant turn, or all of it past max_length)."""

    def report(self) -> dict:
        tokens = sum(len(t) for t in self.batch.tokens)
        return {"conversations": self.conversations, "rows": len(self.batch), "truncated": self.truncated,
                "dropped_without_loss_tokens": self.dropped, "tokens": tokens,
                "trained_tokens": int(self.batch.trained_tokens)}


def assistant_mask(tokenizer, conversation: list[dict], final_turn_only: bool = False) -> tuple[list[int], np.ndarray]:
    """Token ids of a conversation and its loss mask: 1 on the tokens of each assistant turn (or
    of the last one), through its end-of-turn marker. A turn's span runs from the prefix with the
    generation prompt to the prefix with the turn, so the template must render a prefix of the
    conversation as a prefix of its tokens (checked: a template that rewrites earlier turns, such
    as one dropping their thinking, would otherwise shift the mask)."""
    full = chat_ids(tokenizer, conversation, False)
    mask = np.zeros(len(full), np.float32)
    turns = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
    for i in turns[-1:] if final_turn_only else turns:
        before = chat_ids(tokenizer, conversation[:i], True)
        through = chat_ids(tokenizer, conversation[: i + 1], False)
        if full[:len(before)] != before or full[:len(through)] != through:
            raise ValueError(f"assistant turn {i}: the chat template renders the conversation up to this turn "
                             "differently from the whole conversation, so its tokens cannot be located; use "
                             "sft.final_turn_only=true or a template that keeps earlier turns as they are")
        mask[len(before):len(through)] = 1.0
    return full, mask


def sft_rows(tokenizer, conversations: list[list[dict]], final_turn_only: bool = False, max_length: int = 0) -> SFTRows:
    """Learner rows of chat conversations: cut at `max_length` tokens (0: whole), and left out when
    no trained token remains (position 0 predicts nothing)."""
    tokens, masks, truncated, dropped = [], [], 0, 0
    for n, conv in enumerate(conversations, 1):
        try:
            ids, mask = assistant_mask(tokenizer, conv, final_turn_only)
        except ValueError as e:
            raise ValueError(f"conversation {n}: {e}") from None
        if max_length and len(ids) > max_length:
            ids, mask, truncated = ids[:max_length], mask[:max_length], truncated + 1
        if not mask[1:].any():
            dropped += 1
            continue
        tokens.append(np.asarray(ids, np.int64))
        masks.append(mask)
    return SFTRows(TrainBatch(tokens, masks), len(conversations), truncated, dropped)


def sft_batch(tokenizer, conversations: list[list[dict]], final_turn_only: bool = False,
              max_length: int = 0) -> TrainBatch:
    """The rows of `sft_rows`, without its counts."""
    return sft_rows(tokenizer, conversations, final_turn_only, max_length).batch


def token_batches(lengths: list[int] | np.ndarray, order: list[int] | np.ndarray, batch_tokens: int) -> list[list[int]]:
    """Rows in `order` cut into consecutive batches of at most `batch_tokens` tokens each (a row
    longer than that is a batch alone); every row is in exactly one batch."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        if current and used + lengths[i] > batch_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(int(i))
        used += int(lengths[i])
    if current:
        batches.append(current)
    return batches


def sft_plan(s: SFTConfig, lengths: list[int], seed: int) -> list[tuple[int, list[int]]]:
    """(epoch, row indices) of every optimizer step, known up front so the schedule knows its
    length: each epoch a fresh shuffle, cut by tokens (`batch_tokens`) or by rows (`batch_size`,
    the remainder left out)."""
    rng = np.random.default_rng(seed)
    plan = []
    for epoch in range(s.epochs):
        order = rng.permutation(len(lengths))
        if s.batch_tokens:
            batches = token_batches(lengths, order, s.batch_tokens)
        else:
            batches = [order[k * s.batch_size:(k + 1) * s.batch_size].tolist()
                       for k in range(max(1, len(lengths) // s.batch_size))]
        plan += [(epoch, b) for b in batches]
    return plan


def warmup_steps(s: SFTConfig, total_steps: int) -> int:
    """`warmup_ratio` of the steps (at least one) when set, else `warmup_steps`."""
    return max(1, round(s.warmup_ratio * total_steps)) if s.warmup_ratio else s.warmup_steps


@dataclass(frozen=True)
class SFTLoss:
    """Next-token negative log-likelihood, summed over the loss-mask tokens."""

    temperature: float = 1.0
    needs_reference = False

    def __call__(self, logp: torch.Tensor, mb: dict[str, torch.Tensor], ref_logp: torch.Tensor | None) -> LossTerms:
        zero = torch.zeros((), device=logp.device)
        return LossTerms(-(logp * mb["mask"]).sum(), zero, zero, zero)


def sft_epochs(cfg: Config, learners, data: TrainBatch, logger=None,
               plan: list[tuple[int, list[int]]] | None = None, resume=None, fingerprint: dict | None = None,
               checkpoints: bool = False) -> list[float]:
    """Chat SFT (shuffled epochs, one update per batch of `sft_plan`) on a LearnerGroup; returns the
    losses. With `checkpoints` (jobs/sft.py), a checkpoint every `checkpoint.every_steps` updates
    and on SIGTERM (then it returns early); `resume`: a checkpoint directory to continue after."""
    from amray import checkpoint
    from amray.trainer import StopRequest

    s = cfg.sft
    if not len(data):
        raise ValueError("no SFT row has a token to train on")
    plan = plan or sft_plan(s, [len(t) for t in data.tokens], cfg.data.shuffle_seed)
    learners.configure(s.lr, len(plan), warmup_steps(s, len(plan)), s.min_lr_ratio)
    losses: list[float] = []
    if resume is not None:  # the plan is known up front: skip the updates the checkpoint holds
        state = checkpoint.driver_state(resume)
        learners.load_checkpoint(str(resume / "learner"))
        losses = list(state["losses"])
    with StopRequest() as stop, tqdm(total=len(plan), initial=len(losses), desc="sft", unit="step",
                                     disable=not cfg.log.progress) as bar:
        for epoch, idx in plan[len(losses):]:
            batch = data.select(idx)
            m = learners.train_step(batch, SFTLoss())
            losses.append(m["loss"])
            bar.update(1)
            bar.set_postfix(loss=round(m["loss"], 4), epoch=epoch)
            if logger is not None:
                logger.log(len(losses), {"sft/loss": m["loss"], "sft/epoch": epoch, "sft/lr": m["lr"],
                                         "sft/tokens": sum(len(t) for t in batch.tokens)}, advance=False)
            every = cfg.checkpoint.every_steps
            if checkpoints and (stop.requested or (every and len(losses) % every == 0)):
                checkpoint.save(learners, cfg.log.output_dir, len(losses),
                                {"step": len(losses), "losses": losses, "fingerprint": fingerprint or {},
                                 "model_dir": learners.model_dir, "train_dtype": learners.compute_dtype},
                                cfg.checkpoint.keep)
            if stop.requested:
                break
    return losses


def run_sft(cfg: Config, cluster, data: TrainBatch, logger=None) -> list[float]:
    """SFT warm start on the cluster's learners, then sync the result into the engines."""
    losses = sft_epochs(cfg, cluster.learners, data, logger)
    cluster.sync_weights()
    return losses
