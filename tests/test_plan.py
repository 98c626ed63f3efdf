"""The capacity plan (`python -m amray.plan`): the paper configs fit the cluster their header names
and no smaller one, and its learner arithmetic matches what real FSDP2 ranks hold (tiny model and
a 302M-parameter one, within 15%)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from amray.batch import TrainBatch
from amray.cluster import init_ray
from amray.config import load_config
from amray.grpo import GRPOLoss
from amray.learner import LearnerGroup
from amray.models import RANDOM_300M, build_tiny_model
from amray.plan import learner_memory, model_shape

ROOT = Path(__file__).resolve().parents[1]
PAPER = [ROOT / "configs/am_thinking_32b_stage1.yaml", ROOT / "configs/am_thinking_32b_stage2.yaml"]


def run_plan(config: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "amray.plan", "--config", str(config), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def header_cluster(config: Path) -> list[str]:
    """The `--nodes N --gpus-per-node G --gpu-memory-gib M` the config's header comment names."""
    m = re.search(r"amray\.plan --config \S+ (--nodes \d+ --gpus-per-node \d+ --gpu-memory-gib \d+)", config.read_text())
    assert m, f"{config.name}: no `python -m amray.plan` line in its header"
    return m.group(1).split()


@pytest.mark.parametrize("config", PAPER, ids=["stage1", "stage2"])
def test_paper_config_fits_the_cluster_its_header_names(config):
    rc, out = run_plan(config, *header_cluster(config), "--json")
    assert rc == 0, out
    p = json.loads(out)
    assert p["fits"] and p["model"]["parameters"] > 32e9
    assert p["cluster"]["gpus_for_engines"] + p["cluster"]["gpus_for_learners"] <= p["cluster"]["gpus"]
    assert p["learner"]["per_rank_bytes"]["peak"] <= p["learner"]["usable_bytes"]
    assert p["engine"]["concurrent_sequences"] >= 1 and p["weight_sync"]["seconds"] > 0
    rc, text = run_plan(config, *header_cluster(config))  # the same, as a table
    assert rc == 0 and "fits      yes" in text and "without checkpointing" in text


def test_stage2_is_the_papers_stage2():
    cfg = load_config(PAPER[1])
    assert cfg.trainer.lr == 1e-6 and cfg.rollout.max_tokens == 32768
    d = cfg.data  # stage 2's ledger selection: drop what stage 1 solved, mix in 15k chat + 5k IFEval rows
    assert d.ledger and d.ledger_model and d.chat and d.ifeval
    assert (d.ledger_stage, d.chat_count, d.ifeval_count) == (2, 15000, 5000)
    assert cfg.reward.chat.mode == "reward_model" and cfg.reward.chat.model_path
    assert load_config(PAPER[0]).trainer.lr == 4e-6


def test_plan_names_the_first_thing_that_does_not_fit():
    rc, out = run_plan(PAPER[0], "--nodes", "8", "--gpus-per-node", "8", "--gpu-memory-gib", "80")
    assert rc == 1 and "fits      NO: placement: learner rank" in out
    rc, out = run_plan(PAPER[0], "--nodes", "16", "--gpus-per-node", "8", "--gpu-memory-gib", "80", "--json",
                       "trainer.gradient_checkpointing=false")
    p = json.loads(out)
    assert rc == 1 and p["problems"][0].startswith("learner rank memory")
    with_ckpt = p["learner"]["per_rank_bytes"]["activations_with_checkpointing"]
    assert p["learner"]["per_rank_bytes"]["activations"] > 10 * with_ckpt
    rc, out = run_plan(PAPER[0], "--nodes", "16", "--gpus-per-node", "8", "--gpu-memory-gib", "20")
    assert rc == 1 and "engine KV cache" in out


def test_model_shape_counts_the_parameters_of_the_real_model(tmp_path):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    for name, sizes in (("tiny", {}), ("untied", {"tie_word_embeddings": False}), ("302m", RANDOM_300M)):
        config = AutoConfig.from_pretrained(build_tiny_model(tmp_path / name, **sizes) if name != "302m"
                                            else random_302m())
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config)
        model.tie_weights()
        assert model_shape(str(tmp_path / name) if name != "302m" else str(random_302m())).params == \
            sum(p.numel() for p in model.parameters()), name


def random_302m() -> Path:
    return build_tiny_model(ROOT / load_config(None).model.cache_dir / "random-302m", **RANDOM_300M)


def grpo_batch(rows: int, length: int) -> TrainBatch:
    rng = np.random.default_rng(0)
    tokens = [rng.integers(3, 300, length) for _ in range(rows)]
    masks = [np.r_[np.zeros(length // 3), np.ones(length - length // 3)].astype(np.float32) for _ in range(rows)]
    return TrainBatch(tokens, masks, rng.normal(size=rows).astype(np.float32), [np.zeros(length, np.float32)] * rows)


@pytest.mark.parametrize("which,dtype", [("tiny", "float32"), ("302m", "bfloat16")])
def test_plan_predicts_the_memory_a_learner_rank_holds(tmp_path, which, dtype):
    """2 ranks, each one packed micro-batch of 2 x 128 tokens: the plan's parameter, gradient,
    optimizer and activation bytes against the tensors the rank holds after one update."""
    model_dir = build_tiny_model(tmp_path / "tiny") if which == "tiny" else random_302m()
    cfg = load_config(None, ["trainer.num_workers=2", f"trainer.dtype={dtype}", "trainer.micro_batch_tokens=256"])
    init_ray(cfg)
    learners = LearnerGroup(str(model_dir), cfg.trainer)
    try:
        measured = learners.measure_memory(grpo_batch(4, 128), GRPOLoss())
    finally:
        learners.shutdown()
        ray.shutdown()
    b = torch.finfo(getattr(torch, dtype)).bits // 8
    predicted = learner_memory(model_shape(str(model_dir)), 2, b, 256, cfg.trainer.logprob_chunk_tokens, False)
    keys = ("parameters", "gradients", "optimizer", "activations")
    for rank in measured:
        for key in keys:
            assert abs(predicted[key] - rank[key]) <= 0.15 * rank[key], (key, predicted[key], rank[key])
        total = sum(rank[k] for k in keys)
        assert abs(sum(predicted[k] for k in keys) - total) <= 0.15 * total
