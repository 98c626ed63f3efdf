"""The GRPO loop's data, in one place: what a step samples, generates, scores and trains on.

    Prompt      a task row and its tokenized chat prompt
    Sample      one generated response: tokens, vLLM's sampling logprobs, finish reason, weight version
    Group       one prompt's samples and their rewards; GRPO normalises advantages within it
    Rollout     a step's groups, addressed by group id (never by position in a flat list)
    TrainBatch  rows for the learner: tokens, loss mask, advantages, sampling logprobs

Engines, rollout, learner, ledger and evaluation all import these; none of them defines its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PASS_REWARD = 1.0
"""A sample passes (counts toward pass@1, accuracy, the ledger's pass rate) when its reward
reaches this: every verifiable source scores 0 or 1, and 1 means the verifier accepted it."""


def passed(rewards: np.ndarray | list[float]) -> np.ndarray:
    return np.asarray(rewards, dtype=np.float64) >= PASS_REWARD


@dataclass
class Prompt:
    """A task row plus its tokenized chat prompt. `row` carries `id`, `source` and ground truth."""

    row: dict
    token_ids: list[int]


@dataclass
class Sample:
    """One generated response and what GRPO needs to know about it."""

    group_id: str
    sample_index: int
    token_ids: np.ndarray  # response tokens (int64)
    logprobs: np.ndarray  # vLLM's sampling logprob of each response token (float32)
    text: str
    finish_reason: str  # "stop" | "length" | "abort"
    weight_version: int

    @property
    def truncated(self) -> bool:
        """Cut at max_tokens: AM-Thinking gives such responses zero advantage."""
        return self.finish_reason == "length"


@dataclass
class Group:
    """The samples of one prompt in one step, in sample order, with their rewards."""

    id: str
    prompt: Prompt
    samples: list[Sample]
    rewards: np.ndarray  # float32, one per sample
    reward_infos: list[dict] = field(default_factory=list)

    @property
    def truncated(self) -> np.ndarray:
        return np.array([s.truncated for s in self.samples], dtype=bool)

    @property
    def response_lengths(self) -> np.ndarray:
        return np.array([len(s.token_ids) for s in self.samples], dtype=np.int64)

    @property
    def pass_rate(self) -> float:
        return float(passed(self.rewards).mean()) if len(self.rewards) else 0.0


@dataclass
class Rollout:
    """A step's groups; flat views (`rewards`, `samples`, ...) run group by group, in group order."""

    groups: list[Group]
    generate_s: float = 0.0
    """From the first request to the last sample landing."""
    reward_wait_s: float = 0.0
    """Waiting for rewards after the last sample landed (scoring overlaps generation)."""
    stats: dict[str, float] = field(default_factory=dict)
    """What the engine fleet did meanwhile (utilisation, all-busy vs tail time, restarts)."""

    def group(self, group_id: str) -> Group:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise KeyError(f"no group {group_id!r} in this rollout")

    @property
    def prompts(self) -> list[Prompt]:
        return [g.prompt for g in self.groups]

    @property
    def samples(self) -> list[Sample]:
        return [s for g in self.groups for s in g.samples]

    @property
    def rewards(self) -> np.ndarray:
        return _cat([g.rewards for g in self.groups], np.float32)

    @property
    def reward_infos(self) -> list[dict]:
        return [info for g in self.groups for info in g.reward_infos]

    @property
    def truncated(self) -> np.ndarray:
        return _cat([g.truncated for g in self.groups], bool)

    @property
    def response_lengths(self) -> np.ndarray:
        return _cat([g.response_lengths for g in self.groups], np.int64)

    def flat(self, per_group: dict[str, np.ndarray]) -> np.ndarray:
        """Values kept per group id (e.g. advantages) laid out like `samples`."""
        return _cat([np.asarray(per_group[g.id]) for g in self.groups], np.float32)

    def train_batch(self, advantages: dict[str, np.ndarray]) -> TrainBatch:
        """Prompt + response rows; loss on response tokens, with each group's advantages."""
        tokens, masks, logprobs, adv = [], [], [], []
        for g in self.groups:
            p = np.asarray(g.prompt.token_ids, dtype=np.int64)
            if len(advantages[g.id]) != len(g.samples):
                raise ValueError(f"group {g.id}: {len(advantages[g.id])} advantages for {len(g.samples)} samples")
            for s, a in zip(g.samples, advantages[g.id]):
                tokens.append(np.concatenate([p, s.token_ids]))
                masks.append(np.concatenate([np.zeros(len(p), np.float32), np.ones(len(s.token_ids), np.float32)]))
                logprobs.append(np.concatenate([np.zeros(len(p), np.float32), s.logprobs]))
                adv.append(a)
        return TrainBatch(tokens, masks, np.asarray(adv, dtype=np.float32), logprobs)


@dataclass
class TrainBatch:
    """Rows to learn from. `loss_mask` marks the tokens that are trained (response / assistant
    tokens); `sample_logprobs` holds vLLM's sampling logprobs at those positions (GRPO only)."""

    tokens: list[np.ndarray]
    loss_mask: list[np.ndarray]
    advantages: np.ndarray | None = None
    sample_logprobs: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def trained_tokens(self) -> float:
        """Loss-mask tokens that predict a next token (position 0 predicts nothing)."""
        return float(sum(float(np.sum(m[1:])) for m in self.loss_mask))

    def select(self, idx: list[int]) -> TrainBatch:
        def pick(xs: list | None) -> list | None:
            return None if xs is None else [xs[i] for i in idx]

        adv = None if self.advantages is None else self.advantages[idx]
        return TrainBatch(pick(self.tokens), pick(self.loss_mask), adv, pick(self.sample_logprobs))


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
