"""Fan-out over a list of Ray actors (the one way the engine fleet and the learner group call all
of their members), and placing them with placement groups."""

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


def placement(bundle: dict[str, float], count: int, strategy: str, what: str, timeout_s: float):
    """A placement group of `count` equal bundles, ready, or an error naming what could not be
    placed (before any actor waits forever for resources no node has)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = {k: v for k, v in bundle.items() if v}
    group = placement_group([dict(bundle) for _ in range(count)], strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise RuntimeError(f"cannot place {count} {what}, each needing {bundle} ({strategy}), within "
                           f"ray.placement_timeout_s={timeout_s:g}s; the cluster has {ray.cluster_resources()}")
    return group


def in_bundle(group, index: int) -> dict:
    """Actor options that put it in bundle `index` of `group`."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)}


def release(group) -> None:
    from ray.util.placement_group import remove_placement_group

    if group is not None:
        remove_placement_group(group)
