"""The learner on a GPU: one FSDP2 rank over NCCL, driven in-process (no Ray), on random-weight
models of real architectures (nothing is downloaded). For a lent GPU machine that has PyTorch and
transformers but no Ray or vLLM; it runs on a CPU too (`--device cpu`, gloo), smaller.

    python benchmarks/gpu_learner.py [--device cuda] [--arch smollm2,qwen2.5-0.5b] [--output OUT.json]

Per architecture it checks, and reports:
  dtype/attention   what `trainer.dtype=auto` and the attention choice pick on this device
  packed == padded  one float32 GRPO update from the same weights, rows packed vs right-padded:
                    loss, grad norm and the updated weights' logprobs agree
  streamed == one   the same update in two accumulate() calls vs one (token-mean over both)
  bf16 mismatch     mean / max |logprob(bf16 compute) - logprob(float32)| on the same weights
  checkpoint        save_checkpoint -> one more update -> load_checkpoint gives back the logprobs
  throughput        a 128-row GRPO update (16 prompts x 8 samples, ~30% prompt tokens) in the
                    auto dtype, packed (default attention), packed with SDPA per sequence, padded:
                    tokens/s, trained tokens/s, peak GPU memory, pack_weights time, and the first
                    update's loss / grad norm (the variants must agree); the packed one profiled
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def without_ray() -> None:
    """The learner module imports Ray for its actor group; this check drives one rank in-process,
    so stand in an inert module when Ray is not installed (the lent GPU image has none)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        stub = types.ModuleType("ray")
        stub.remote = lambda cls=None, **_: cls if cls is not None else (lambda c: c)
        sys.modules["ray"] = stub


without_ray()

from amray.batch import TrainBatch  # noqa: E402
from amray.config import TrainerConfig  # noqa: E402
from amray.grpo import GRPOLoss  # noqa: E402
from amray import learner as learner_mod  # noqa: E402
from amray import policy as policy_mod  # noqa: E402
from workloads import grpo_batch  # noqa: E402

ARCHS = {  # random weights, the architecture of the named model
    "smollm2": ("LlamaForCausalLM", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                         tie_word_embeddings=True, rope_theta=100000.0)),
    "qwen2.5-0.5b": ("Qwen2ForCausalLM", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                              num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                              tie_word_embeddings=True, rope_theta=1000000.0)),
    "tiny": ("Qwen2ForCausalLM", dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
}


def build_model(arch: str, out: Path) -> Path:
    import transformers

    cls_name, kw = ARCHS[arch]
    cls = getattr(transformers, cls_name)
    config = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))(max_position_embeddings=4096, **kw)
    torch.manual_seed(0)
    model = cls(config)
    model.save_pretrained(out)
    return out


class OneRank:
    """A LearnerRank in this process (world size 1; main sets up the process group once and
    `setup` keeps it)."""

    def __init__(self, model_dir: Path, device: str, **trainer) -> None:
        cls = learner_mod.LearnerRank
        cls = cls.__ray_metadata__.modified_class if hasattr(cls, "__ray_metadata__") else cls
        cfg = TrainerConfig(num_workers=1, num_gpus=1.0 if device == "cuda" else 0.0, lr=1e-5,
                            torch_threads=os.cpu_count() or 1, **trainer)
        self.rank = cls(0, 1, str(model_dir), cfg, False)
        self.info = self.rank.setup("127.0.0.1", 0)

    def __getattr__(self, name):
        return getattr(self.rank, name)

    def free(self) -> None:
        del self.rank
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def check_arch(arch: str, device: str, rows: int, work: Path, micro_batch_tokens: int = 4096,
               profile_dir: Path | None = None) -> dict:
    model_dir = build_model(arch, work / arch)
    vocab = ARCHS[arch][1]["vocab_size"]
    out: dict = {"arch": arch}
    small = grpo_batch(2, 4, vocab, seed=1)
    probe = [int(t) for t in small.tokens[0]]
    start = int(np.argmax(small.loss_mask[0]))

    # float32: packed vs padded, then streamed (two accumulate calls) vs one call from the same weights
    results = {}
    for name, packing in (("packed", True), ("padded", False)):
        r = OneRank(model_dir, device, dtype="float32", micro_batch_tokens=1024, packing=packing)
        m = r.train_step(small, GRPOLoss())
        results[name] = (m, r.sequence_logprobs(probe, start))
        if packing:
            r.begin_update()
            r.accumulate(small.select(list(range(0, 4))), GRPOLoss())
            r.accumulate(small.select(list(range(4, 8))), GRPOLoss())
            streamed = r.finish_update()
        r.free()
    (pm, pl), (qm, ql) = results["packed"], results["padded"]
    out["packed_vs_padded"] = {"loss": [pm["loss"], qm["loss"]], "grad_norm": [pm["grad_norm"], qm["grad_norm"]],
                               "max_abs_dlogp_after": float(np.abs(pl - ql).max())}
    one = OneRank(model_dir, device, dtype="float32", micro_batch_tokens=1024)
    one.train_step(small, GRPOLoss())
    one_m = one.train_step(small, GRPOLoss())  # the second update, from the same weights as `streamed`
    one.free()
    out["streamed_vs_one"] = {"grad_norm": [streamed["grad_norm"], one_m["grad_norm"]],
                              "loss": [streamed["loss"], one_m["loss"]]}
    # bf16 compute vs float32 on the same (start) weights
    auto = OneRank(model_dir, device, dtype="auto", micro_batch_tokens=4096)
    out["dtype_auto"], out["attention"] = auto.info["dtype"], auto.info["attention"]
    fresh32 = OneRank(model_dir, device, dtype="float32")
    f32 = fresh32.sequence_logprobs(probe, start)
    fresh32.free()
    lp = auto.sequence_logprobs(probe, start)
    out["auto_vs_fp32_logprob"] = {"mean": float(np.abs(lp - f32).mean()), "max": float(np.abs(lp - f32).max()),
                                   "tokens": len(lp)}
    # checkpoint round trip
    ckpt = str(work / f"{arch}-ckpt")
    auto.save_checkpoint(ckpt)
    saved = auto.sequence_logprobs(probe, start)
    auto.train_step(small, GRPOLoss())
    moved = float(np.abs(auto.sequence_logprobs(probe, start) - saved).max())
    auto.load_checkpoint(ckpt)
    out["checkpoint"] = {"moved_by_update": moved,
                         "max_abs_dlogp_restored": float(np.abs(auto.sequence_logprobs(probe, start) - saved).max())}
    auto.free()
    # throughput in the configured dtype: packed with the default attention, packed with SDPA run
    # sequence by sequence, right-padded rows; each from the start weights
    batch = grpo_batch(rows // 8, 8, vocab)
    out["throughput"] = {}
    for name in ("packed", "packed_sdpa_loop", "padded"):
        out["throughput"][name] = throughput(model_dir, device, batch, small, name, micro_batch_tokens,
                                             profile_dir / f"{arch}.prof.txt" if name == "packed" and profile_dir else None)
    return out


def throughput(model_dir: Path, device: str, batch: TrainBatch, small: TrainBatch, name: str, micro_batch_tokens: int,
               profile: Path | None) -> dict:
    kernel = policy_mod.torch_varlen
    if name == "packed_sdpa_loop":
        policy_mod.torch_varlen = lambda: None
    try:
        r = OneRank(model_dir, device, dtype="auto", micro_batch_tokens=micro_batch_tokens, packing=name != "padded")
        first = r.train_step(small, GRPOLoss())  # warm-up, and a check that every variant takes the same step
        r.train_step(batch.select(list(range(0, len(batch), 8))), GRPOLoss())
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        m = r.train_step(batch, GRPOLoss())
        sync(device)
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        packed = r.pack_weights()
        sync(device)
        pack_s = time.perf_counter() - t1
        if profile is not None:
            from torch.profiler import ProfilerActivity, profile as prof

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
            with prof(activities=acts) as p:
                r.train_step(batch, GRPOLoss())
                sync(device)
            key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
            profile.write_text(p.key_averages().table(sort_by=key, row_limit=25) + "\n" +
                               p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        r.free()
    finally:
        policy_mod.torch_varlen = kernel
    tokens = sum(len(t) for t in batch.tokens)
    return {"rows": len(batch), "tokens": tokens, "micro_batch_tokens": micro_batch_tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "trained_tokens_per_s": batch.trained_tokens / seconds, "loss": m["loss"],
            "first_step": {"loss": first["loss"], "grad_norm": first["grad_norm"]},
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
            "pack_weights_s": pack_s, "packed_bytes": packed.nbytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="smollm2,qwen2.5-0.5b")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--micro-batch-tokens", type=int, default=4096, help="trainer.micro_batch_tokens of the timed update")
    ap.add_argument("--output", default="")
    args = ap.parse_args()
    kernel = policy_mod.torch_varlen()
    env = {"torch": torch.__version__, "device": args.device, "torch_varlen": kernel is not None,
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    print(json.dumps(env), flush=True)
    report = {"env": env, "archs": []}
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("nccl" if args.device == "cuda" else "gloo", rank=0, world_size=1,
                                         init_method=f"tcp://127.0.0.1:{port}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch.split(","):
            t0 = time.perf_counter()
            r = check_arch(arch, args.device, args.rows, Path(tmp), args.micro_batch_tokens,
                           Path(args.output).parent if args.output else None)
            r["wall_s"] = time.perf_counter() - t0
            report["archs"].append(r)
            print(json.dumps(r), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
