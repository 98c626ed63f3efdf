"""Step time under a heavy-tailed response-length workload: (a) today's synchronous path
(generate -> train, requests bound to engines round-robin), (b) balanced streaming, strictly
on-policy, (c) asynchronous with grpo.max_staleness=1. Goals: (b) <= 0.6 x (a), (c) <= 0.5 x (a).

    .venv/bin/python benchmarks/bench_long_tail.py [--steps 4] [--prompts 16] [--samples 4] [--median 32] [--sigma 1.2] [--cap 896] [--per sample|prompt]

Each request's max_tokens is drawn log-normally (ignore_eos, so it generates exactly that many):
most are near the median, a few 10-30x longer. `--per sample` (the default) draws one length per
request, so a group's samples differ as sampled responses do; `--per prompt` gives all samples of
a prompt its one length (a long prompt's whole group is long, and trains last). The prompts'
expected lengths (the mean of their samples') are given to the fleet as the difficulty ledger would.
Two engines; on this 2-core machine the engines (with their vLLM processes) are pinned to core 0
and the learner ranks (`--learners`, one by default: one rank per core as one per GPU) to core 1,
every thread of them, so rollout and training imitate disaggregated GPUs; the driver, reward
workers and Ray's daemons go on `--host-core` (1, beside the learners, by default: the streamed
pipeline's driver starves beside busy engines; 0 slows training less). Set --no-pin to leave
placement to the OS. Reported: median seconds per step after the first, per mode, the ratios to
(a), the ratios paired per step (every mode draws the same prompts and lengths at each step), and
each mode's time split, engine utilisation and CPU seconds per step of each role (engines,
learners, host).

Beside each goal, the limit that mode can reach on this workload (`limit_ratio`, the median over
(a)'s steps of bound / (a)'s step): (b) is strictly on-policy, so a group can be trained on only
once it is scored, and the groups holding the long responses are scored last (`b_bound`, from
when each group was scored in (a), `group_arrivals`; pinned, the two engines share core 0, which
the OS keeps busy through (a)'s tail already, so balanced dispatch cannot score them sooner). (c)
at best hides generation entirely, but every step still trains and syncs: train + sync of (a). A
goal below its limit cannot be met by any schedule on the machine and workload measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = {
    "a_sync_round_robin": ["grpo.pipeline=sync", "rollout.dispatch=round_robin", "rollout.longest_first=false"],
    "b_stream_balanced": ["grpo.pipeline=stream", "rollout.dispatch=balanced"],
    "c_async_staleness_1": ["grpo.pipeline=stream", "rollout.dispatch=balanced", "grpo.max_staleness=1"],
}


def lengths_for(n: int, median: int, sigma: float, cap: int, seed: int) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(min(cap, max(2, round(x)))) for x in rng.lognormal(np.log(median), sigma, size=n)]


def budgets(prompts: int, args: argparse.Namespace) -> list[list[int]]:
    """Each prompt's samples' lengths: drawn one per sample, or one per prompt shared by its samples."""
    k = args.samples
    if args.per == "prompt":
        return [[b] * k for b in lengths_for(prompts, args.median, args.sigma, args.cap, seed=0)]
    flat = lengths_for(prompts * k, args.median, args.sigma, args.cap, seed=0)
    return [flat[i * k:(i + 1) * k] for i in range(prompts)]


def arrivals(rollout, scored: dict[int, float], t0: float) -> list[list[float]]:
    """[seconds after the step started, share of the step's tokens] of each group as it was scored
    (a group scored during an earlier step, in the asynchronous mode, at 0), in scoring order."""
    def tokens(g) -> int:
        return len(g.samples) * len(g.prompt.token_ids) + int(g.response_lengths.sum())

    total = sum(tokens(g) for g in rollout.groups)
    return sorted([max(0.0, scored[id(g)] - t0), tokens(g) / total] for g in rollout.groups)


def roles(engine_pids: list[int], learner_pids: list[int]) -> dict[str, list]:
    """This run's processes (the driver and everything it started) by role: the engines with
    their vLLM processes, the learner ranks, and the host (the driver, reward workers, Ray's daemons)."""
    import psutil

    def tree(pids: list[int]) -> set[int]:
        return {p.pid for pid in pids for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]}

    engines, learners = tree(engine_pids), tree(learner_pids)
    driver = psutil.Process()
    out: dict[str, list] = {"engines": [], "learners": [], "host": []}
    for proc in [driver, *driver.children(recursive=True)]:
        out["engines" if proc.pid in engines else "learners" if proc.pid in learners else "host"].append(proc)
    return out


def cpu_seconds(procs: dict[str, list]) -> dict[str, float]:
    """CPU seconds (user + system) each role has used so far."""
    import psutil

    def used(p) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return 0.0

    return {role: sum(used(p) for p in ps) for role, ps in procs.items()}


def pin(procs: dict[str, list], host_core: int) -> None:
    """The engines (with their vLLM processes) on core 0, the learner ranks on core 1, and the
    host on `host_core`. Every thread is moved: a process's affinity call moves only its main
    thread, and Ray's event-loop thread (where vLLM's front end runs) and vLLM's I/O threads were
    already started."""
    import os

    import psutil

    for role, ps in procs.items():
        cpus = {"engines": {0}, "learners": {1}, "host": {host_core}}[role]
        for proc in ps:
            try:
                for t in proc.threads():
                    try:
                        os.sched_setaffinity(t.id, cpus)
                    except OSError:
                        pass  # a thread that ended meanwhile
            except psutil.Error:
                pass


def run_mode(name: str, overrides: list[str], args: argparse.Namespace, model_dir: str) -> dict:
    import os

    import ray

    from amray.cluster import Cluster, init_ray
    from amray.config import load_config
    from amray.prompts import PromptSampler, build_prompts
    from amray import trainer
    from amray.trainer import GRPO
    from transformers import AutoTokenizer

    cfg = load_config(None, [
        "rollout.num_engines=2", f"rollout.max_tokens={args.cap}", f"rollout.max_model_len={args.cap + 128}",
        "rollout.kv_cache_gib=2", f"trainer.num_workers={args.learners}", "trainer.lr=1e-4", f"trainer.micro_batch_tokens={args.micro_batch_tokens}",
        f"grpo.prompts_per_step={args.prompts}", f"grpo.samples_per_prompt={args.samples}",
        "grpo.zero_truncated=false", "reward.num_workers=2",
        f"reward.custom={ROOT / 'tests' / 'data' / 'first_letter_reward.py'}:reward", "log.progress=false",
        "ray.num_cpus=16", *overrides])
    init_ray(cfg)
    cluster = Cluster(cfg, model_dir)
    procs = roles([ray.get(a.__ray_call__.remote(lambda self: os.getpid())) for a in cluster.engines.actors],
                  [ray.get(r.__ray_call__.remote(lambda self: os.getpid())) for r in cluster.learners.ranks])
    if args.pin:
        pin(procs, args.host_core)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    n = args.prompts * (args.steps + 2)
    rows = [{"id": f"q{i}", "source": "custom", "prompt": f"Write about topic {i}."} for i in range(n)]
    prompts = build_prompts(tokenizer, rows)
    budget = budgets(n, args)
    cluster.engines.expected_lengths = {f"q{i}": sum(b) / len(b) for i, b in enumerate(budget)}  # as the ledger would
    real = cluster.engines.submit

    def submit_with_budgets(requests):  # each sample generates exactly its drawn length
        for r in requests:
            i = int(str(r.prompt.row["id"])[1:])
            r.sampling = dict(r.sampling, max_tokens=budget[i][r.sample_index], ignore_eos=True)
        real(requests)

    cluster.engines.submit = submit_with_budgets
    cluster.learners.configure(cfg.trainer.lr, args.steps + 2)
    grpo = GRPO(cfg, cluster, PromptSampler(prompts, seed=0))
    steps = []
    scored: dict[int, float] = {}  # id(group) -> when it reached the update (scored)
    real_add = trainer.Update.add

    def timed_add(update, group) -> None:
        scored[id(group)] = time.perf_counter()
        real_add(update, group)

    trainer.Update.add = timed_add
    try:
        for _ in range(args.steps):
            t0, cpu0 = time.perf_counter(), cpu_seconds(procs)
            rollout, m = grpo.step()
            cpu = {f"cpu_s/{k}": v - cpu0[k] for k, v in cpu_seconds(procs).items()}
            steps.append({"wall_s": time.perf_counter() - t0, "group_arrivals": arrivals(rollout, scored, t0), **cpu,
                          **{k: v for k, v in m.items() if k.startswith(("time/", "rollout/engine", "goodput/", "async/"))}})
            print(name, json.dumps({k: round(v, 3) for k, v in steps[-1].items() if isinstance(v, float)}), flush=True)
    finally:
        trainer.Update.add = real_add
        cluster.shutdown()
        ray.shutdown()
    later = steps[1:] or steps
    return {"step_s_median": statistics.median(s["wall_s"] for s in later),
            "split_median": {k: statistics.median(s.get(k, 0.0) for s in later)
                             for k in ("time/generate_s", "time/generate_all_busy_s", "time/generate_tail_s", "time/train_s",
                                       "time/train_overlapped_s", "time/sync_s", "rollout/engine_utilization",
                                       "cpu_s/engines", "cpu_s/learners", "cpu_s/host")},
            "steps": steps}


def b_bound(a: dict) -> float:
    """The fastest a strictly on-policy streamed step can be, from a step of (a) (the same prompts
    and lengths): a group can be trained on only once it is scored, so with groups scored when
    they were in (a), and each taking its share of (a)'s training, one learner working without a
    pause from the first group on ends at max over groups j of (when j was scored + the training
    of j and of every group scored after it); then the sync. Pinned, both engines share core 0,
    which the OS already keeps busy through (a)'s tail, so balanced dispatch cannot score groups
    sooner than (a) did (unpinned it might: the bound is then approximate)."""
    end, left = 0.0, 0.0
    for at, share in reversed(a["group_arrivals"]):
        left += share * a["time/train_s"]
        end = max(end, at + left)
    return end + a["time/sync_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--median", type=int, default=32, help="median response tokens")
    ap.add_argument("--sigma", type=float, default=1.2, help="log-normal sigma (1.2: ~3%% of lengths past 10x the median)")
    ap.add_argument("--cap", type=int, default=896, help="longest response (28x the median; the tiny model has 1024 positions)")
    ap.add_argument("--per", choices=("sample", "prompt"), default="sample",
                    help="one drawn length per request (default) or one per prompt, shared by its samples")
    ap.add_argument("--micro-batch-tokens", type=int, default=1024,
                    help="trainer.micro_batch_tokens; streamed learning sends a group's rows once this many per rank are scored")
    ap.add_argument("--learners", type=int, default=1,
                    help="learner ranks (trainer.num_workers), all on core 1: one rank per core, as one per GPU; "
                         "2 time-share the core, every FSDP collective waiting on the other rank's turn")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--host-core", type=int, choices=(0, 1), default=1,
                    help="the core of the driver, reward workers and Ray's daemons: 1 beside the learners (default), 0 beside the engines")
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--output", default="")
    args = ap.parse_args()
    from amray.models import resolve_model

    model_dir = str(resolve_model(args.model))
    budget = [b for group in budgets(args.prompts * (args.steps + 2), args) for b in group]
    print(f"lengths: median {statistics.median(budget)}, max {max(budget)}, mean {statistics.mean(budget):.0f}")
    results = {name: run_mode(name, MODES[name], args, model_dir) for name in args.modes.split(",")}
    base = results.get("a_sync_round_robin", {}).get("step_s_median")
    a_walls = [s["wall_s"] for s in results.get("a_sync_round_robin", {}).get("steps", [])[1:]]
    summary = {name: {"step_s": round(r["step_s_median"], 2), **({"ratio_to_a": round(r["step_s_median"] / base, 3)}
                                                                  if base else {}),
                      **({"paired_ratios": [round(s["wall_s"] / w, 3) for s, w in zip(r["steps"][1:], a_walls)]}
                         if a_walls else {}),
                      "split": {k: round(v, 3) for k, v in r["split_median"].items()}} for name, r in results.items()}
    if base:  # the limit beside each goal, from (a)'s own steps (the same prompts and lengths)
        a_steps = results["a_sync_round_robin"]["steps"][1:] or results["a_sync_round_robin"]["steps"]
        bounds = {"b_stream_balanced": [b_bound(s) for s in a_steps],
                  "c_async_staleness_1": [s["time/train_s"] + s["time/sync_s"] for s in a_steps]}
        for name, seconds in bounds.items():
            if name in summary:
                summary[name]["limit_ratio"] = round(statistics.median(x / s["wall_s"] for x, s in zip(seconds, a_steps)), 3)
    print(json.dumps(summary, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps({"args": vars(args), "summary": summary, "results": results}, indent=1))


if __name__ == "__main__":
    main()
