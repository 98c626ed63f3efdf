"""Wall time and score of a full GSM8K pass (1319 problems, K=1) through `jobs/evaluate.py`.

    .venv/bin/python benchmarks/bench_gsm8k.py [--model smollm2] [--limit N] [--max-tokens 512] \\
        [--kv-cache-gib 6] [--dtype bfloat16] [--data-dir /work/shared/evaldata] [--output-dir runs/bench_gsm8k]

The first use of `smollm2` converts SmolLM2-135M-Instruct from its GGUF (about a minute), done here
before the clock starts. Reported: wall time of the whole job (Ray, engine start, generation,
scoring, writing), generation time alone, generated tokens/s, and pass@1 with its standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data-dir", default="/work/shared/evaldata")
    ap.add_argument("--output-dir", default=str(ROOT / "runs" / "bench_gsm8k"))
    ap.add_argument("--limit", type=int, default=0, help="first N problems only (0: all 1319)")
    ap.add_argument("--max-tokens", type=int, default=512, help="response budget per problem")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--kv-cache-gib", type=int, default=6,
                    help="engine KV cache; SmolLM2 needs ~46 KB/token in fp32, so the 1 GiB default holds only "
                         "~30 sequences of 700 tokens at once")
    ap.add_argument("--dtype", default="bfloat16", help="engine dtype (bfloat16 halves the weight traffic on AVX512-BF16 CPUs)")
    ap.add_argument("overrides", nargs="*", help="more dotted overrides for jobs/evaluate.py")
    args = ap.parse_args()

    from amray.models import resolve_model
    from jobs.evaluate import main as evaluate

    t0 = time.perf_counter()
    resolve_model(args.model)  # one-time conversion, outside the measurement
    convert_s = time.perf_counter() - t0

    start = time.perf_counter()
    summary = evaluate(["--model", args.model, "--benchmarks", "gsm8k", "--data-dir", args.data_dir,
                        "--samples", "1", "--limit", str(args.limit), "--output-dir", args.output_dir,
                        f"eval.max_tokens={args.max_tokens}", f"rollout.max_model_len={args.max_model_len}",
                        f"rollout.kv_cache_gib={args.kv_cache_gib}", f"rollout.dtype={args.dtype}", *args.overrides])
    wall_s = time.perf_counter() - start

    samples = [json.loads(line) for line in (Path(args.output_dir) / "samples.jsonl").read_text().splitlines()]
    m = summary["benchmarks"]["gsm8k"]
    generate_s = float(summary.get("generate_s", {}).get("gsm8k", 0.0))
    tokens = sum(s["response_tokens"] for s in samples)
    verdicts: dict[str, int] = {}
    for s in samples:
        verdict = s["reward_info"].get("verdict", "error")
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    result = {
        "model": args.model, "problems": m["problems"], "samples_per_problem": m["k"],
        "max_tokens": args.max_tokens, "max_model_len": args.max_model_len,
        "kv_cache_gib": args.kv_cache_gib, "dtype": args.dtype,
        "wall_s": round(wall_s, 1), "generate_and_score_s": round(generate_s, 1),
        "generated_tokens": tokens, "tokens_per_s": round(tokens / generate_s, 1) if generate_s else None,
        "pass@1": round(m["pass@1"], 4), "pass@1_stderr": round(m["pass@1_stderr"], 4),
        "mean_response_tokens": round(m["mean_response_tokens"], 1), "truncation_rate": round(m["truncation_rate"], 4),
        "verdicts": verdicts, "model_convert_s": round(convert_s, 1), "backend": summary.get("backend"),
    }
    (Path(args.output_dir) / "bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
