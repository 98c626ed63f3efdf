"""Weight-sync seconds vs model bytes, with this machine's memcpy bandwidth measured in the same run.

    .venv/bin/python benchmarks/bench_weight_sync.py [--sizes tiny,small,medium] [--repeats 3]

For each model size: 2 FSDP2 learner ranks (gloo) and 1 vLLM engine; `Cluster.sync_weights()`
= each rank packs its own rows of every weight into a buffer in Ray's object store (no gather),
the engine assembles the parts into a memfd its vLLM worker maps, and reloads in place (CPU
backend). Reported: seconds per sync, of which the ranks' packing (`gather_pack_s`), effective
GB/s (model bytes / sync seconds), and memcpy GB/s of a buffer the same size (the floor a sync
that copies the weights a few times can approach).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # hidden, layers, intermediate, heads, kv_heads, vocab
    "tiny": (256, 4, 512, 4, 2, 512),
    "small": (512, 8, 1536, 8, 4, 8192),
    "medium": (1024, 12, 2816, 16, 4, 16384),
}


def memcpy_gbps(nbytes: int, repeats: int = 5) -> float:
    import numpy as np

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return nbytes / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,small,medium")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ray

    from amray.cluster import Cluster, init_ray
    from amray.config import load_config
    from amray.models import build_tiny_model

    cfg = load_config(None, ["rollout.max_model_len=256", "reward.num_workers=1", "trainer.num_workers=2"])
    init_ray(cfg)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            h, layers, inter, heads, kv, vocab = SIZES[name]
            model_dir = build_tiny_model(Path(tmp) / name, hidden_size=h, layers=layers, intermediate_size=inter,
                                         heads=heads, kv_heads=kv, vocab_size=vocab)
            cluster = Cluster(cfg, str(model_dir))
            nbytes = ray.get(cluster.learners.pack_weights()[0]).nbytes
            cluster.sync_weights()  # warm up
            times, gathers = [], []
            for _ in range(args.repeats):
                m = cluster.sync_weights()
                times.append(m["sync_s"])
                gathers.append(m["sync_gather_s"])
            cluster.shutdown()
            best = min(times)
            results.append({"model": name, "bytes": nbytes, "sync_s": round(best, 3),
                            "gather_pack_s": round(min(gathers), 3),
                            "effective_gbps": round(nbytes / best / 1e9, 3),
                            "memcpy_gbps": round(memcpy_gbps(nbytes), 2),
                            "sync_over_memcpy_time": round(best / (nbytes / (memcpy_gbps(nbytes) * 1e9)), 1)})
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
