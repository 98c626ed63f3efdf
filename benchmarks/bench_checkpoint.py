"""Checkpoint save and load seconds vs checkpoint bytes, next to this disk's write bandwidth
measured in the same run (a file of the same size written and fsync'ed). Goal: save <= 2 x bytes /
bandwidth (the shards of model + Adam moments written by every rank in parallel, no gather).

    .venv/bin/python benchmarks/bench_checkpoint.py [--sizes tiny,small,medium] [--ranks 2] [--dir /tmp/ckpt]

Each size: 2 FSDP2 learner ranks (gloo) take one update (so the optimizer state exists), then
`amray.checkpoint.save` (the run's atomic save: shards, driver state, fsync, rename) and
`load_checkpoint` into a fresh learner group; reported with the bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # hidden, layers, intermediate, heads, kv_heads, vocab (as benchmarks/bench_weight_sync.py)
    "tiny": (256, 4, 512, 4, 2, 512),
    "small": (512, 8, 1536, 8, 4, 8192),
    "medium": (1024, 12, 2816, 16, 4, 16384),
}


def disk_write_gbps(directory: Path, nbytes: int) -> float:
    """Sequential write of `nbytes` with fsync: the floor a checkpoint save can approach."""
    path = directory / "bandwidth.bin"
    block = os.urandom(1 << 24)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        written = 0
        while written < nbytes:
            f.write(block[: min(len(block), nbytes - written)])
            written += min(len(block), nbytes - written)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return nbytes / seconds / 1e9


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,small,medium")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--dir", default="", help="where checkpoints are written (default: a temp dir)")
    args = ap.parse_args()
    import ray

    from amray import checkpoint
    from amray.config import load_config
    from amray.grpo import GRPOLoss, rollout_advantages
    from amray.learner import LearnerGroup
    from amray.models import build_tiny_model
    from amray.rayenv import init_ray
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_pipeline import synthetic_rollout

    cfg = load_config(None, [f"trainer.num_workers={args.ranks}"])
    init_ray(cfg)
    root = Path(args.dir or tempfile.mkdtemp(prefix="amray-ckpt-"))
    root.mkdir(parents=True, exist_ok=True)
    rollout = synthetic_rollout(0)
    batch = rollout.train_batch(rollout_advantages(rollout))
    results = []
    for name in args.sizes.split(","):
        h, layers, inter, heads, kv, vocab = SIZES[name]
        model_dir = build_tiny_model(root / "models" / name, hidden_size=h, layers=layers, intermediate_size=inter,
                                     heads=heads, kv_heads=kv, vocab_size=vocab)
        learners = LearnerGroup(str(model_dir), cfg.trainer)
        learners.configure(1e-4, 10)
        learners.train_step(batch, GRPOLoss())
        out = root / "runs" / name
        t0 = time.perf_counter()
        path = checkpoint.save(learners, out, 1, {"step": 1, "model_dir": str(model_dir)}, keep=1)
        save_s = time.perf_counter() - t0
        nbytes = dir_bytes(path)
        fresh = LearnerGroup(str(model_dir), cfg.trainer)
        fresh.configure(1e-4, 10)
        t0 = time.perf_counter()
        fresh.load_checkpoint(str(path / "learner"))
        load_s = time.perf_counter() - t0
        learners.shutdown()
        fresh.shutdown()
        gbps = disk_write_gbps(root, nbytes)
        floor = nbytes / (gbps * 1e9)
        results.append({"model": name, "checkpoint_bytes": nbytes, "save_s": round(save_s, 3),
                        "load_s": round(load_s, 3), "disk_write_gbps": round(gbps, 2),
                        "save_over_write_time": round(save_s / floor, 2), "goal": "<= 2"})
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    ray.shutdown()
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
