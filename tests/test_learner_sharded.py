"""Sharded initialisation on real learner ranks (Ray actors, FSDP2 over gloo): each rank reads only
its own rows of the safetensors file, and what the ranks hold together is exactly the checkpoint,
untied head, rotary buffers and frozen reference included. bfloat16 compute keeps float32 masters."""

from __future__ import annotations

import ctypes.util
import os

import numpy as np
import pytest
import ray
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from amray.batch import TrainBatch
from amray.cluster import init_ray
from amray.config import load_config
from amray.grpo import GRPOLoss
from amray.learner import LearnerGroup
from amray.models import build_tiny_model
from amray.plan import ModelShape
from amray.rayenv import cpu_allocator_env
from amray.weight_sync.packing import assemble, layout

SEQUENCE = [7, 31, 200, 5, 99, 42, 42, 8, 150, 3, 61, 17]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # untied: the head is a tensor of its own in the file; 321 MLP rows: 2 ranks split them unevenly
    out = build_tiny_model(tmp_path_factory.mktemp("sharded") / "untied", tie_word_embeddings=False,
                           hidden_size=192, heads=3, kv_heads=3, intermediate_size=321)
    init_ray(load_config(None))
    yield out
    ray.shutdown()


def trainer_config(**overrides):
    return load_config(None, ["trainer.num_workers=2", *[f"trainer.{k}={v}" for k, v in overrides.items()]]).trainer


def expected_logprobs(model_dir) -> np.ndarray:
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    t = torch.tensor([SEQUENCE])
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=t).logits[0, :-1], -1).gather(-1, t[0, 1:, None]).squeeze(-1)
    return logp.numpy()


def grpo_batch(rows: int = 4, length: int = 24) -> TrainBatch:
    rng = np.random.default_rng(1)
    tokens = [rng.integers(3, 300, length) for _ in range(rows)]
    masks = [np.r_[np.zeros(length // 3), np.ones(length - length // 3)].astype(np.float32) for _ in range(rows)]
    logprobs = [np.zeros(length, np.float32) for _ in range(rows)]
    return TrainBatch(tokens, masks, rng.normal(size=rows).astype(np.float32), logprobs)


def test_ranks_read_only_their_rows_and_hold_exactly_the_checkpoint(model_dir):
    learners = LearnerGroup(str(model_dir), trainer_config(dtype="float32"), reference=True)
    try:
        checkpoint = load_file(model_dir / "model.safetensors")
        total = sum(t.numel() * t.element_size() for t in checkpoint.values())
        read = [info["checkpoint_bytes_read"] for info in learners.setup_info]
        assert sum(read) == total  # between them the ranks read the file once ...
        assert max(read) <= total / 2 * 1.05  # ... and each about its half

        packed = ray.get(learners.pack_weights()[0])
        assert set(packed.names) == set(checkpoint)
        for name, offset, shape in zip(packed.names, packed.offsets, packed.shapes):
            n = checkpoint[name].numel() * 4
            got = torch.frombuffer(bytearray(packed.buffer[offset:offset + n]), dtype=torch.float32).view(shape)
            assert torch.equal(got, checkpoint[name]), name

        # the weight sync's parts: each rank packs only its rows (MLP rows split 161/160), and
        # assembled they are the gathered state dict, byte for byte; a damaged or missing part is caught
        parts = ray.get(learners.pack_shards())
        meta = layout(parts)
        whole = np.empty(meta["nbytes"], np.uint8)
        assert assemble(meta, parts, whole)
        assert meta["names"] == packed.names and meta["shapes"] == packed.shapes
        assert np.array_equal(whole, packed.buffer)
        assert all(abs(p.nbytes - packed.nbytes / 2) < 0.01 * packed.nbytes for p in parts)
        parts[1].buffer = parts[1].buffer.copy()
        parts[1].buffer[-3] ^= 1
        assert not assemble(meta, parts, whole)
        with pytest.raises(ValueError, match="every row once"):
            assemble(meta, parts[:1], whole)

        # rotary buffers (not in the file), the untied head and the attention all as in transformers
        np.testing.assert_allclose(learners.sequence_logprobs(SEQUENCE, 1), expected_logprobs(model_dir), atol=1e-5)

        # the frozen reference was loaded the same way: before any update its KL to the policy is 0
        metrics = learners.train_step(grpo_batch(), GRPOLoss(kl_coef=0.1))
        assert metrics["tokens"] > 0 and abs(metrics["kl"]) < 1e-7
    finally:
        learners.shutdown()


def test_bfloat16_compute_keeps_float32_master_weights_and_optimizer_state(model_dir):
    learners = LearnerGroup(str(model_dir), trainer_config(dtype="bfloat16"))
    try:
        # CPU ranks allocate under tcmalloc where it is installed (install.sh installs it; CI has
        # it): glibc with a fixed mmap threshold made a SmolLM2 update 1.8x slower
        env = cpu_allocator_env()
        ranks = ray.get([r.__ray_call__.remote(lambda _: (dict(os.environ), open("/proc/self/maps").read()))
                         for r in learners.ranks])
        assert all(e.get(k) == v for e, _ in ranks for k, v in env.items())
        chosen = "malloc" in os.environ.get("LD_PRELOAD", "")  # an allocator preloaded by whoever runs this
        assert env or chosen
        if ctypes.util.find_library("tcmalloc_minimal") and not chosen:
            assert env == {"LD_PRELOAD": ctypes.util.find_library("tcmalloc_minimal")}
            assert all("libtcmalloc_minimal" in maps for _, maps in ranks)
        assert [info["dtype"] for info in learners.setup_info] == ["bfloat16", "bfloat16"]
        bf16 = learners.sequence_logprobs(SEQUENCE, 1)
        fp32 = expected_logprobs(model_dir)
        assert 0 < np.abs(bf16 - fp32).max() < 0.1  # computed in bf16, close to fp32
        measured = learners.measure_memory(grpo_batch(), GRPOLoss())
        shape = ModelShape.from_hf_config(AutoModelForCausalLM.from_pretrained(model_dir).config.to_dict())
        for r, rank in enumerate(measured):  # float32 masters and gradients (FSDP pads them), two AdamW moments
            assert rank["parameters"] == rank["gradients"] == 4 * shape.sharded_params(2)
            assert rank["optimizer"] == 8 * shape.rank_params(2, r)
    finally:
        learners.shutdown()
