"""Checkpoints: a run that is killed (a preemption, `ray job stop`, a lost node) resumes exactly.

    OUTPUT_DIR/checkpoints/step_000050/
        learner/      sharded model + optimizer + LR-scheduler state (torch.distributed.checkpoint),
                      written by every learner rank in parallel: no rank gathers the model
        driver.json   step, weight version and hash, the prompt sampler's state before the next
                      step, the fingerprint of the config and data, the metrics to continue from

A checkpoint appears atomically: it is written as `.step_000050.tmp` and renamed once complete,
so a kill during a save leaves the previous one usable; older ones beyond `checkpoint.keep` are
deleted only after the new one is complete.

    python -m amray.checkpoint export CKPT_DIR OUT_DIR [--dtype bfloat16|float32]

writes a Hugging Face model directory (safetensors + tokenizer) from any checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from amray.config import Config

DIR = "checkpoints"
UNFINGERPRINTED = ("log", "ray", "checkpoint", "eval", "bench", "demo", "sync.timeout_s", "reward.num_workers",
                   "reward.worker_num_cpus", "rollout.num_cpus", "rollout.threads", "rollout.request_timeout_s",
                   "trainer.num_cpus", "trainer.torch_threads")
"""Settings that do not change what the next steps compute: a resume may change them freely."""


class ResumeError(RuntimeError):
    pass


def step_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / DIR / f"step_{step:06d}"


def complete(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (a half-written `.tmp` one is not)."""
    root = Path(output_dir) / DIR
    found = [p for p in root.glob("step_*") if (p / "driver.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def to_resume(cfg: Config) -> Path | None:
    """`checkpoint.resume`: auto (the latest complete checkpoint, if any), never, or a path."""
    how = cfg.checkpoint.resume
    if how == "never":
        return None
    if how == "auto":
        found = complete(cfg.log.output_dir)
        return found[-1] if found else None
    path = Path(how).expanduser()
    if not (path / "driver.json").is_file():
        raise ResumeError(f"checkpoint.resume={how!r}: not a complete checkpoint (no driver.json); complete ones "
                          f"under {Path(cfg.log.output_dir) / DIR}: {[p.name for p in complete(cfg.log.output_dir)]}")
    return path


def plan_resume(cfg: Config, rows: list[dict]) -> tuple[Path | None, dict]:
    """Before any actor starts: the checkpoint this run continues from (`checkpoint.resume`),
    checked against its settings and data, and the run's fingerprint. A directory that already
    holds a run is never appended to by a fresh one (metrics.jsonl would mix two runs)."""
    fp = fingerprint(cfg, rows)
    start = to_resume(cfg)
    metrics = Path(cfg.log.output_dir) / "metrics.jsonl"
    if start is None and metrics.exists() and metrics.stat().st_size:
        why = ("it has no complete checkpoint to continue from (set checkpoint.every_steps to save them)"
               if cfg.checkpoint.resume == "auto" else "checkpoint.resume=never would start it over")
        raise ResumeError(f"{cfg.log.output_dir} already holds a run (metrics.jsonl), and {why}: choose a fresh "
                          "--output-dir, or continue a checkpointed run with checkpoint.resume=auto")
    if start is not None:
        check_fingerprint(driver_state(start)["fingerprint"], fp, cfg.checkpoint.allow_changes, start)
    return start, fp


# --- what a resume must agree on -----------------------------------------------------------------

def fingerprint(cfg: Config, data: list[dict]) -> dict:
    """The settings and data the next steps depend on (flattened config keys, a hash of the rows)."""
    flat = _flatten(dataclasses.asdict(cfg))
    kept = {k: v for k, v in flat.items() if not any(k == u or k.startswith(u + ".") for u in UNFINGERPRINTED)}
    rows = hashlib.sha256("\n".join(json.dumps(r, sort_keys=True, default=str) for r in data).encode()).hexdigest()
    return {"config": kept, "data": rows[:32], "rows": len(data)}


def check_fingerprint(saved: dict, now: dict, allow: list[str], where: Path) -> None:
    """Refuse to resume with other settings or data than the run was started with, naming them."""
    changed = [f"{k}: {saved['config'].get(k)!r} -> {now['config'].get(k)!r}"
               for k in sorted(set(saved["config"]) | set(now["config"]))
               if saved["config"].get(k) != now["config"].get(k) and not any(k == a or k.startswith(a + ".")
                                                                                for a in allow)]
    if saved["data"] != now["data"] and "data" not in allow:
        changed.append(f"the training data ({saved['rows']} rows -> {now['rows']} rows, another hash)")
    if changed:
        raise ResumeError(f"cannot resume from {where}: the run changed since it was saved: {'; '.join(changed)}. "
                          "Run with the saved settings, or allow the change with checkpoint.allow_changes=[KEY, ...] "
                          "(`data` for the training rows), or start a fresh --output-dir")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


# --- saving and loading --------------------------------------------------------------------------

def save(learners, output_dir: str | Path, step: int, driver: dict, keep: int) -> Path:
    """Write checkpoint `step` (learner ranks in parallel, then the driver's state) and make it
    appear in one rename; then drop the oldest beyond `keep`."""
    final = step_dir(output_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    learners.save_checkpoint(str(tmp / "learner"))
    (tmp / "driver.json").write_text(json.dumps(driver, indent=1, default=str))
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (a resumed run re-reaching it)
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    for stale in complete(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def driver_state(path: Path) -> dict:
    return json.loads((path / "driver.json").read_text())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the learner ranks' side (each rank calls these on its own shards) ----------------------------

def save_learner(path: str, model, optimizer, scheduler) -> None:
    """Every rank writes its own shards of the model and optimizer state (and rank 0 the
    scheduler's), in parallel, into one torch.distributed.checkpoint directory."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd, "scheduler": scheduler.state_dict()}, checkpoint_id=path)


def load_learner(path: str, model, optimizer, scheduler) -> None:
    """Each rank reads back its own shards (the world size may differ from the saving run's)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd, "scheduler": scheduler.state_dict()}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(state["scheduler"])


def write_hf_model(path: str | Path, state_dict: dict, model_dir: str, dtype: str) -> None:
    """A Hugging Face directory from a full state dict, cast to `dtype` tensor by tensor, through a
    model built on the meta device (no second copy of the weights is ever loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = getattr(torch, dtype)
    for name in list(state_dict):
        state_dict[name] = state_dict[name].to(target)
    config = AutoConfig.from_pretrained(model_dir)
    config.torch_dtype = target
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=target)
    model.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(path)


# --- export --------------------------------------------------------------------------------------

def export(checkpoint: str | Path, out_dir: str | Path, dtype: str = "") -> Path:
    """A Hugging Face model directory from a checkpoint, in `dtype` (default: the training
    dtype), loadable by transformers and vLLM. The model is built on the meta device and filled
    straight from the sharded files in the target dtype: one copy of the weights, never two."""
    import torch
    import torch.distributed.checkpoint as dcp
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    checkpoint, out = Path(checkpoint), Path(out_dir)
    state = driver_state(checkpoint)
    model_dir = state["model_dir"]
    name = dtype or state.get("train_dtype", "float32")
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype {name!r}: use float32 or bfloat16")
    target = getattr(torch, name)
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=target)
    model.to_empty(device="cpu")
    weights = {k: v for k, v in model.state_dict().items()}
    dcp.load({"model": weights}, checkpoint_id=str(checkpoint / "learner"))  # copies into our tensors, cast
    model.tie_weights()
    model.config.torch_dtype = target
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    (out / "amray_export.json").write_text(json.dumps({"checkpoint": str(checkpoint), "step": state["step"],
                                                       "dtype": name, "weights_hash": state.get("weights_hash")}))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m amray.checkpoint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a Hugging Face model directory from a checkpoint")
    e.add_argument("checkpoint", help="a checkpoint directory, e.g. runs/x/checkpoints/step_000050")
    e.add_argument("out_dir", help="where the model directory goes")
    e.add_argument("--dtype", choices=("bfloat16", "float32"), default="", help="default: the training dtype")
    args = p.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out_dir, args.dtype)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
