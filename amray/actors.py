"""Fan-out over a list of Ray actors: the one way the engine fleet and the learner group call
all of their members."""

from __future__ import annotations

import ray


def fan_out(actors: list, method: str, *args: object) -> list[ray.ObjectRef]:
    """Call `method(*args)` on every actor; the refs, in actor order."""
    return [getattr(a, method).remote(*args) for a in actors]


def call_all(actors: list, method: str, *args: object) -> list:
    """`fan_out`, then wait for every answer."""
    return ray.get(fan_out(actors, method, *args))


def kill_all(actors: list, graceful: str = "", timeout_s: float = 30) -> None:
    """Ask each actor to `graceful()` first (best effort, bounded), then kill it."""
    for a in actors:
        if graceful:
            try:
                ray.get(getattr(a, graceful).remote(), timeout=timeout_s)
            except Exception:  # noqa: BLE001 - best effort; the actor is killed next
                pass
        ray.kill(a)
