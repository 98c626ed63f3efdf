"""What amray.Run hands back, as plain objects a notebook can look into (and as pandas tables).

    step = run.step()
    step.samples[0]          # StepSample: group id, prompt, response, reward, advantage, truncated, length, info
    step.metrics["reward/mean"]
    step.to_pandas()         # one row per sample
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas

    from amray.batch import Rollout
    from amray.sft import SFTRows


@dataclass
class StepSample:
    """One response of a GRPO step and what the step made of it."""

    group_id: str
    """The prompt's group: GRPO normalises advantages within it."""
    sample_index: int
    prompt: str
    """The user query of the group's row."""
    response: str
    reward: float
    advantage: float
    """What the update weighed this sample's tokens by (0 for a truncated one, grpo.zero_truncated)."""
    truncated: bool
    length: int
    """Response tokens."""
    info: dict
    """The reward's info (`error` when it could not score; a custom reward's own fields)."""
    finish_reason: str
    weight_version: int
    row_id: str


@dataclass
class StepResult:
    """One GRPO step: its samples (with rewards and advantages), its prompts, its metrics, and the
    step's Rollout itself (token ids, sampling logprobs, groups by id)."""

    step: int
    metrics: dict[str, float]
    samples: list[StepSample]
    prompts: list[str]
    """One per group, in group order."""
    rollout: Rollout = field(repr=False)

    @classmethod
    def of(cls, step: int, rollout: Rollout, advantages: dict[str, np.ndarray], metrics: dict[str, float]) -> StepResult:
        from amray.data.rows import prompt_text

        samples, prompts = [], []
        for g in rollout.groups:
            row = g.prompt.row
            prompts.append(prompt_text(row["prompt"] if "prompt" in row else [
                m for m in row.get("messages", []) if m.get("role") != "assistant"]))
            for s, reward, adv, info in zip(g.samples, g.rewards, advantages[g.id], g.reward_infos):
                samples.append(StepSample(g.id, s.sample_index, prompts[-1], s.text, float(reward), float(adv),
                                          s.truncated, len(s.token_ids), info, s.finish_reason, s.weight_version,
                                          str(row.get("id", ""))))
        return cls(step, metrics, samples, prompts, rollout)

    @property
    def rewards(self) -> np.ndarray:
        return np.array([s.reward for s in self.samples], np.float32)

    @property
    def advantages(self) -> np.ndarray:
        return np.array([s.advantage for s in self.samples], np.float32)

    @property
    def infos(self) -> list[dict]:
        return [s.info for s in self.samples]

    def to_pandas(self) -> pandas.DataFrame:
        """One row per sample: group_id, prompt, response, reward, advantage, truncated, length, info, ..."""
        import pandas

        return pandas.DataFrame([asdict(s) for s in self.samples])

    def __repr__(self) -> str:
        m = self.metrics
        return (f"StepResult(step={self.step}, {len(self.prompts)} prompts x {len(self.samples) // max(1, len(self.prompts))}"
                f" samples, reward/mean={m.get('reward/mean', float('nan')):.3f}, "
                f"reward/accuracy={m.get('reward/accuracy', float('nan')):.3f})")


@dataclass
class SFTResult:
    """An SFT run: the loss of every update, the rows it trained on, and its plan."""

    losses: list[float]
    rows: SFTRows = field(repr=False)
    """The conversations as learner rows, and what preparing them did (`rows.report()`)."""
    plan: list[tuple[int, list[int]]] = field(repr=False)
    """(epoch, row indices) of every update planned."""

    @property
    def stopped(self) -> bool:
        """Stopped by SIGTERM before the plan's end (a checkpoint of the last update was written)."""
        return len(self.losses) < len(self.plan)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per update: step, epoch, loss."""
        import pandas

        return pandas.DataFrame({"step": range(1, len(self.losses) + 1),
                                 "epoch": [e for e, _ in self.plan[:len(self.losses)]], "loss": self.losses})
