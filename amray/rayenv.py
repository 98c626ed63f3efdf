"""Joining Ray the one way every amray command does (jobs, the offline scorer, tests), and which
node a process runs on.

    init_ray(cfg)    # RAY_ADDRESS / ray.address: join that cluster; else start a fresh local Ray
                     # (with its dashboard when ray.dashboard=true)

Under `ray job submit` Ray sets RAY_ADDRESS, so a job joins the cluster it was submitted to; a
command must then not pass num_cpus (Ray refuses resources when joining), which is why no
command calls ray.init itself.
"""

from __future__ import annotations

import ctypes.util
import os

import ray

from amray.config import Config, validate


def init_ray(cfg: Config) -> None:
    """Validate the config (a bad value stops here, before any actor starts), then join the
    cluster we were submitted to (`ray job submit`), or the given address, or start a local one.
    Locally, Ray gets more logical CPUs than cores: our actors are mostly idle."""
    validate(cfg)
    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": str(cfg.rollout.kv_cache_gib)}}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        # address="local": a fresh local Ray, never a stray cluster someone left running
        context = ray.init(address="local", num_cpus=cfg.ray.num_cpus or max(8, os.cpu_count() or 1),
                           include_dashboard=cfg.ray.dashboard, runtime_env=env)
        if cfg.ray.dashboard:  # Ray takes the next free port when 8265 is in use: say which
            print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)


def cpu_allocator_env() -> dict[str, str]:
    """Environment variables for a CPU process that trains on large tensors (a learner rank):
    tcmalloc preloaded where it is installed (install.sh installs libtcmalloc-minimal4), else
    glibc with a fixed 64 KiB mmap threshold; nothing if LD_PRELOAD already names an allocator.
    glibc's default moving threshold keeps freed activation blocks on the heap, so a rank's RSS
    ratchets up micro-batch by micro-batch (SmolLM2, 2048 tokens: 6.9 GB peak instead of 5.3); a
    fixed threshold returns them at once, but every large tensor is then page-faulted in afresh
    (a SmolLM2 update 1.8x slower than under tcmalloc, which reuses freed blocks and still
    returns memory: README, Performance, learner)."""
    preload = os.environ.get("LD_PRELOAD", "")
    if "malloc" in preload:  # tcmalloc, jemalloc, ...: the user's choice
        return {}
    lib = ctypes.util.find_library("tcmalloc_minimal")  # a soname: the loader finds it on each node
    if lib:
        return {"LD_PRELOAD": ":".join(x for x in (lib, preload) if x)}
    return {"MALLOC_MMAP_THRESHOLD_": str(1 << 16)}


def node_ip() -> str:
    """This process's node, as Ray names it."""
    return ray.util.get_node_ip_address()


def actor_node_ip(actor: ray.actor.ActorHandle) -> str:
    """The node an actor runs on (where a file it writes ends up)."""
    return ray.get(actor.__ray_call__.remote(lambda _self: ray.util.get_node_ip_address()))


def where_written(path: str, actor: ray.actor.ActorHandle, what: str) -> str:
    """`what` at `path`, written by `actor`: named with its node, and a warning when that is not
    this driver's node (a local path there is on another machine)."""
    node, here = actor_node_ip(actor), node_ip()
    text = f"{what}: {path}, on node {node}"
    if node != here:
        text += f"; this driver runs on {here}: unless that path is on shared storage, it exists on {node} only"
    return text
