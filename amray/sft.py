"""SFT: chat conversations -> learner rows with loss on assistant tokens only, the NLL objective,
and the epoch loop (the CPU demo's warm start and `jobs/sft.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from amray.batch import TrainBatch
from amray.config import Config
from amray.grpo import LossTerms
from amray.prompts import chat_ids


def sft_batch(tokenizer, conversations: list[list[dict]]) -> TrainBatch:
    """Loss on assistant tokens only: each assistant turn's tokens (through its end-of-turn
    marker) are the span between the prefix-with-generation-prompt and the prefix-with-turn."""
    tokens, masks = [], []
    for conv in conversations:
        full = chat_ids(tokenizer, conv, False)
        mask = np.zeros(len(full), np.float32)
        for i, m in enumerate(conv):
            if m["role"] != "assistant":
                continue
            start = len(chat_ids(tokenizer, conv[:i], True))
            end = len(chat_ids(tokenizer, conv[: i + 1], False))
            mask[start:end] = 1.0
        tokens.append(np.asarray(full, np.int64))
        masks.append(mask)
    return TrainBatch(tokens, masks)


@dataclass(frozen=True)
class SFTLoss:
    """Next-token negative log-likelihood, summed over the loss-mask tokens."""

    temperature: float = 1.0
    needs_reference = False

    def __call__(self, logp: torch.Tensor, mb: dict[str, torch.Tensor], ref_logp: torch.Tensor | None) -> LossTerms:
        zero = torch.zeros((), device=logp.device)
        return LossTerms(-(logp * mb["mask"]).sum(), zero, zero, zero)


def sft_epochs(cfg: Config, learners, data: TrainBatch, logger=None) -> list[float]:
    """Chat SFT (shuffled epochs, one update per batch) on a LearnerGroup; returns the losses."""
    s = cfg.sft
    rng = np.random.default_rng(cfg.data.shuffle_seed)
    steps_per_epoch = max(1, len(data) // s.batch_size)
    learners.configure(s.lr, s.epochs * steps_per_epoch, s.warmup_steps, s.min_lr_ratio)
    losses = []
    for epoch in range(s.epochs):
        order = rng.permutation(len(data))
        for k in range(steps_per_epoch):
            idx = order[k * s.batch_size:(k + 1) * s.batch_size].tolist()
            m = learners.train_step(data.select(idx), SFTLoss())
            losses.append(m["loss"])
            if logger is not None:
                logger.log(len(losses), {"sft/loss": m["loss"], "sft/epoch": epoch, "sft/lr": m["lr"]}, advance=False)
    return losses


def run_sft(cfg: Config, cluster, data: TrainBatch, logger=None) -> list[float]:
    """SFT warm start on the cluster's learners, then sync the result into the engines."""
    losses = sft_epochs(cfg, cluster.learners, data, logger)
    cluster.sync_weights()
    return losses
