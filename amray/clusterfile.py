"""Check a `ray up` cluster file before launching it: Ray's own validation, plus what Ray cannot
know and an AWS launch would only reveal after minutes (or never, on a cluster that comes up but
cannot run amray).

    python -m amray.clusterfile cluster.yaml --config configs/am_thinking_32b_stage1.yaml

Checks: Ray's schema and defaults (`prepare_config`, `validate_config`); every node type's
ImageId set (not the shipped placeholder) and one image for all (Ray needs the same Python on
every node); the token that `RAY_AUTH_MODE=token` start commands need, present locally; the
checkout copied without the local .venv (rsync_filter .gitignore); and, per `--config`, enough
GPUs on the GPU node types for its engines and learner ranks, each actor fitting on one node.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path

import yaml

AMI = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")


def ray_prepared(raw: dict) -> dict:
    """The file as `ray up` sees it: Ray's defaults merged in, Ray's schema checked."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def problems(path: str | Path, run_configs: list[str | Path] = ()) -> list[str]:
    """What is wrong with the cluster file at `path` (empty: ready for `ray up`)."""
    raw = yaml.safe_load(Path(path).read_text())
    try:
        config = ray_prepared(raw)
    except Exception as e:  # Ray raises jsonschema's ValidationError, ValueError, RuntimeError
        return [f"{path}: Ray rejects it: {str(e).splitlines()[0]}"]
    found = image_problems(config) + token_problems(config) + copy_problems(config)
    for run in run_configs:
        found += gpu_problems(config, run)
    return [f"{path}: {p}" for p in found]


def image_problems(config: dict) -> list[str]:
    images, found = {}, []
    for name, node in config["available_node_types"].items():
        image = str(node.get("node_config", {}).get("ImageId", ""))
        key = f"available_node_types.{name}.node_config.ImageId"
        if provider_is_aws(config) and not AMI.match(image):
            found.append(f"{key} is {image!r}, not an AMI id: set provider.region's Ubuntu 22.04 Deep Learning "
                         f"Base AMI id (cluster.yaml's header says how to look it up)")
        images[name] = image
    if len(set(images.values())) > 1:
        found.append(f"node types use different images {images}: Ray needs the same Python (and amray the same "
                     f"packages) on every node; give them one ImageId")
    return found


def provider_is_aws(config: dict) -> bool:
    return config.get("provider", {}).get("type") == "aws"


def start_commands(config: dict) -> list[str]:
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config.get(key, [])]


def token_problems(config: dict) -> list[str]:
    """Nodes started with RAY_AUTH_MODE=token need the token file; it is copied from here."""
    if not any("RAY_AUTH_MODE=token" in c for c in start_commands(config)):
        return []
    mounts = {remote: local for remote, local in config.get("file_mounts", {}).items() if remote.endswith("/.ray/auth_token")}
    if not mounts:
        return ["start commands set RAY_AUTH_MODE=token but file_mounts copies no token to "
                "~/.ray/auth_token on the nodes: add `/home/USER/.ray/auth_token: ~/.ray/auth_token`"]
    local = Path(os.path.expanduser(next(iter(mounts.values()))))
    if not local.is_file():
        return [f"file_mounts copies the cluster's token from {local}, which does not exist: "
                f"run `RAY_AUTH_MODE=token ray get-auth-token --generate` first"]
    return []


def copy_problems(config: dict) -> list[str]:
    """A directory mounted from here without the .gitignore filter copies the local venv too."""
    dirs = [remote for remote, local in config.get("file_mounts", {}).items() if Path(os.path.expanduser(local)).is_dir()]
    if dirs and ".gitignore" not in (config.get("rsync_filter") or []):
        return [f"file_mounts copies {', '.join(dirs)} without `rsync_filter: [.gitignore]`: the local .venv "
                f"(GBs) and run outputs would be copied to every node"]
    return []


def gpu_capacity(config: dict) -> tuple[int, int, str]:
    """(most GPUs the cluster can have, GPUs of its largest node, how that was counted)."""
    total, largest, parts = 0, 0, []
    for name, node in config["available_node_types"].items():
        gpus = int((node.get("resources") or {}).get("GPU", 0))
        if gpus and name != config["head_node_type"]:
            count = min(node.get("max_workers", 0), config.get("max_workers", 0))
            total += count * gpus
            parts.append(f"{name}: {count} x {gpus}")
        elif gpus:
            total += gpus
            parts.append(f"{name} (head): {gpus}")
        largest = max(largest, gpus)
    return total, largest, ", ".join(parts) or "no node type declares resources.GPU"


def gpu_problems(config: dict, run_config: str | Path) -> list[str]:
    """Enough GPUs for a run config's engines and learners, and each actor's GPUs on one node."""
    from amray.config import load_config

    cfg = load_config(run_config)
    r, t = cfg.rollout, cfg.trainer
    need = r.num_engines * r.num_gpus + t.num_workers * t.num_gpus
    if not need:
        return []
    have, per_node, how = gpu_capacity(config)
    found = []
    if need > have:
        found.append(f"{run_config} asks for {need:g} GPUs ({r.num_engines} engines x {r.num_gpus:g} + "
                     f"{t.num_workers} learner ranks x {t.num_gpus:g}); the cluster has at most {have} ({how}): "
                     f"raise max_workers")
    for key, gpus in (("rollout.num_gpus", r.num_gpus), ("trainer.num_gpus", t.num_gpus)):
        if gpus > per_node:
            found.append(f"{run_config}: {key}={gpus:g} does not fit on one node ({per_node} GPUs at most)")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m amray.clusterfile", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cluster_yaml", help="the `ray up` file, e.g. cluster.yaml")
    p.add_argument("--config", action="append", default=[], help="a run config the cluster must fit (repeatable)")
    args = p.parse_args(argv)
    found = problems(args.cluster_yaml, args.config)
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if not found:
        print(f"{args.cluster_yaml}: ready for `ray up`")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
