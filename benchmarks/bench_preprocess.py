"""Throughput of `python -m amray.data.preprocess` on synthetic rows, MinHash and embedding reported apart.

    python benchmarks/bench_preprocess.py [--rows 100000] [--embed-rows 5000] [--embedding-dtype auto] [--evaldata DIR]

The command runs end to end (read with datasets, rules, exact + near dedup, exact + 13-gram
decontamination against every eval file, write) with the embedding stage off; the embedding stage
is then timed alone on `--embed-rows` of the kept rows (0 = all of them) because on CPU it is two
orders of magnitude slower than the rest. The eval-set embeddings are computed once and cached.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amray.data.config import DecontaminationConfig  # noqa: E402
from amray.data.decontam import Decontaminator, load_eval_queries  # noqa: E402
from amray.data.preprocess import RULES, main as preprocess  # noqa: E402

WORDS = ("number apples train speed triangle circle radius integer prime sum product remainder sequence "
         "probability coin dice marble bag area perimeter angle degree minutes hours distance rate price "
         "discount profit average median ratio fraction percent square cube root digit divisor multiple "
         "factor equation function value maximum minimum positive negative real point line slope graph "
         "vertex edge path tree string array query element order pairs subset arrangement committee").split()
NAMES = "Alice Bob Carol Dan Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil".split()


def synthetic_query(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 7)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
        words[rng.randrange(len(words))] = str(rng.randint(2, 10_000))
        sentences.append(f"{rng.choice(NAMES)} " + " ".join(words) + ".")
    return " ".join(sentences) + f" What is the {rng.choice(WORDS)} of {rng.randint(2, 999)}?"


def synthetic_rows(n: int, evals: list[str], seed: int = 0) -> list[dict]:
    """Clean rows plus ~15% dirt: duplicates, near duplicates, URLs, images, proofs, sub-questions,
    multiple choice, missing answers and copies of eval questions."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for i in range(n):
        q, answer, source = synthetic_query(rng), str(rng.randint(0, 999)), rng.choices(
            ["math", "code", "science", "chat"], [0.6, 0.2, 0.1, 0.1])[0]
        kind = rng.random()
        if kind < 0.05 and rows:
            q = rng.choice(rows)["prompt"].upper()  # exact duplicate
        elif kind < 0.08 and rows:
            words = rng.choice(rows)["prompt"].split()
            words[rng.randrange(len(words))] = "changed"
            q = " ".join(words)  # near duplicate
        elif kind < 0.09:
            q += " See https://example.org/problem/%d." % i
        elif kind < 0.10:
            q = "As shown in the figure, " + q
        elif kind < 0.11:
            q = "Prove that " + q
        elif kind < 0.12:
            q += " (a) Find the sum. (b) Find the product."
        elif kind < 0.14:
            q += f"\n(A) {answer} (B) {int(answer) + 1} (C) {int(answer) + 2} (D) {int(answer) + 3}"
            answer = "A"
        elif kind < 0.15:
            answer = ""
        elif kind < 0.155:
            q = rng.choice(evals)
        row = {"id": f"syn-{i}", "source": source, "prompt": q}
        if source in ("math", "science"):
            row["answer"] = answer
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--embed-rows", type=int, default=5000, help="rows for the embedding stage (0 = all kept)")
    p.add_argument("--embedding-dtype", default="auto", help="auto, float32 or bfloat16 (decontamination.embedding_dtype)")
    p.add_argument("--evaldata", default=str(ROOT.parent / "shared" / "evaldata"))
    p.add_argument("--cache", default=str(ROOT / ".cache" / "amray" / "embeddings"))
    args = p.parse_args()
    eval_files = sorted(str(f) for f in Path(args.evaldata).glob("*.json*")
                        if f.name != "livecodebench_v5_public_joined.jsonl")  # same problems as the test file
    evals = load_eval_queries(eval_files)

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "train.jsonl", Path(tmp) / "out.jsonl"
        rows = synthetic_rows(args.rows, [e.text for e in evals if e.file in ("math500.jsonl", "gsm8k_test.jsonl")])
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        start = time.perf_counter()
        report = preprocess(["--input", str(src), "--output", str(out), "--report", str(Path(tmp) / "r.json"),
                             "--decontaminate", *eval_files, "--", "decontamination.embedding=false"])
        wall = time.perf_counter() - start
        kept = [json.loads(line)["prompt"] for line in out.read_text().splitlines()]

    cfg = DecontaminationConfig(embedding_cache_dir=args.cache, embedding_dtype=args.embedding_dtype)
    decon = Decontaminator(evals, cfg)
    sample = kept if args.embed_rows == 0 else kept[:args.embed_rows]
    t0 = time.perf_counter()
    decon.semantic(sample[:1])  # loads the model and embeds (or loads cached) eval queries
    t1 = time.perf_counter()
    hits = decon.semantic(sample)
    t2 = time.perf_counter()

    sec = report["seconds"]
    before = RULES[:RULES.index("near_duplicate")]
    minhash_rows = report["rows_in"] - sum(report["rejected_by_rule"].get(r, 0) for r in before)
    figures = {
        "rows": args.rows, "kept": report["rows_out"], "eval_queries": len(evals),
        "rejected_by_rule": report["rejected_by_rule"],
        "command_wall_s_without_embedding": round(wall, 1),
        "command_rows_per_s_without_embedding": round(args.rows / wall),
        "stage_seconds": sec,
        "minhash_rows_per_s": round(minhash_rows / max(sec["near_duplicate"], 1e-9)),
        "embedding_setup_s (model + eval embeddings or cache)": round(t1 - t0, 1),
        "embedding_dtype": args.embedding_dtype, "embedding_bf16_pass": decon._embedder.fast,
        "embedding_rows": len(sample), "embedding_hits": len(hits),
        "embedding_rows_per_s": round(len(sample) / (t2 - t1), 1),
        "embedding_s_for_all_kept_rows (extrapolated)": round(len(kept) / (len(sample) / (t2 - t1))),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
