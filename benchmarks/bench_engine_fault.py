"""Engine-death recovery: a GRPO step during which one of two rollout engines is SIGKILLed while it
generates, next to undisturbed steps of the same run.

    .venv/bin/python benchmarks/bench_engine_fault.py [--steps 3] [--max-tokens 384] [--kill-at 0.4]

Reported: the median undisturbed step (after the first), the disturbed step's wall time and the
seconds from the kill to that step's end (its requests re-dispatched to the surviving engine, every
sample exactly once), and the seconds until the replacement engine serves again with the current
weights (it starts and loads them while later steps run on the survivor).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="undisturbed steps before the kill")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--kill-at", type=float, default=0.4,
                    help="when to kill, as a fraction of an undisturbed step's generation time")
    args = ap.parse_args()

    import ray
    from transformers import AutoTokenizer

    from amray.cluster import Cluster, init_ray
    from amray.config import load_config
    from amray.models import resolve_model
    from amray.prompts import PromptSampler, build_prompts
    from amray.trainer import GRPO

    model_dir = str(resolve_model("tiny"))
    cfg = load_config(None, [
        "rollout.num_engines=2", f"rollout.max_tokens={args.max_tokens}", f"rollout.max_model_len={args.max_tokens + 128}",
        "trainer.num_workers=2", "trainer.lr=1e-4", "grpo.prompts_per_step=8", "grpo.samples_per_prompt=4",
        "grpo.zero_truncated=false", "reward.num_workers=1", "rollout.kv_cache_gib=2",
        f"reward.custom={ROOT / 'tests' / 'data' / 'first_letter_reward.py'}:reward", "log.progress=false"])
    init_ray(cfg)
    cluster = Cluster(cfg, model_dir)
    rows = [{"id": f"q{i}", "source": "custom", "prompt": f"Tell me about number {i}."} for i in range(64)]
    prompts = build_prompts(AutoTokenizer.from_pretrained(model_dir), rows)
    cluster.learners.configure(cfg.trainer.lr, 100)
    grpo = GRPO(cfg, cluster, PromptSampler(prompts, seed=0))
    pool = cluster.engines
    try:
        undisturbed, generate = [], []
        for _ in range(args.steps):
            t = time.perf_counter()
            _, m = grpo.step()
            undisturbed.append(time.perf_counter() - t)
            generate.append(m["time/generate_s"])
        kill_after = args.kill_at * statistics.median(generate[1:] or generate)
        victim = ray.get(pool.actors[1].__ray_call__.remote(lambda self: os.getpid()))
        killed_at: list[float] = []

        def kill() -> None:
            time.sleep(kill_after)
            killed_at.append(time.perf_counter())
            os.kill(victim, signal.SIGKILL)

        t = time.perf_counter()
        threading.Thread(target=kill, daemon=True).start()
        rollout, m = grpo.step()
        end = time.perf_counter()
        assert m["rollout/samples"] == 32 and pool.restarts >= 1, m
        after = []
        while any(s.state != "ready" for s in pool.slots) and time.perf_counter() - end < 300:
            s0 = time.perf_counter()
            grpo.step()
            after.append(time.perf_counter() - s0)
        ready = time.perf_counter()
        result = {
            "undisturbed_step_s_median": round(statistics.median(undisturbed[1:] or undisturbed), 2),
            "undisturbed_generate_s_median": round(statistics.median(generate[1:] or generate), 2),
            "killed_after_s": round(kill_after, 2), "killed_while_generating": m["fault/engine_restarts"] >= 1,
            "disturbed_step_s": round(end - t, 2),
            "kill_to_step_end_s": round(end - killed_at[0], 2),
            "kill_to_replacement_serving_s": round(ready - killed_at[0], 2),
            "steps_on_one_engine_meanwhile": len(after), "their_step_s": [round(x, 2) for x in after],
            "samples_in_disturbed_step": m["rollout/samples"], "engine_restarts": m["fault/engine_restarts"],
        }
        print(json.dumps(result, indent=2))
    finally:
        cluster.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
