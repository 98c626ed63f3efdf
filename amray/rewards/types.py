"""The one value every reward source produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RewardResult:
    reward: float
    """The scalar the GRPO advantage is computed from (0 when the row could not be scored)."""
    info: dict = field(default_factory=dict)
    """JSON-serializable details: verdict, per-test results, `elapsed_s`, and `error` when unscorable."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RewardResult:
        return cls(reward=float(d["reward"]), info=dict(d.get("info", {})))

    @classmethod
    def failed(cls, error: str, **info: object) -> RewardResult:
        """A row that could not be scored: reward 0 and the reason in `info.error`."""
        return cls(reward=0.0, info={"error": error, **info})
