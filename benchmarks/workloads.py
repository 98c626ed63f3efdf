"""Synthetic learner workloads shared by the benchmarks (no Ray: the GPU check imports this too)."""

from __future__ import annotations

import numpy as np

from amray.batch import TrainBatch


def grpo_batch(prompts: int = 16, samples: int = 8, vocab: int = 49152, seed: int = 0) -> TrainBatch:
    """`prompts` x `samples` GRPO rows of random tokens: prompts 60-110 tokens, responses 40-256 with
    30% cut at 256 (about 30% prompt tokens, issue 13's workload), random advantages."""
    rng = np.random.default_rng(seed)
    tokens, masks, logprobs = [], [], []
    for _ in range(prompts):
        prompt = rng.integers(100, vocab, rng.integers(60, 111))
        for _ in range(samples):
            n = 256 if rng.random() < 0.3 else int(rng.integers(40, 256))
            tokens.append(np.concatenate([prompt, rng.integers(100, vocab, n)]))
            masks.append(np.r_[np.zeros(len(prompt)), np.ones(n)].astype(np.float32))
            logprobs.append(np.zeros(len(tokens[-1]), np.float32))
    return TrainBatch(tokens, masks, rng.normal(size=len(tokens)).astype(np.float32), logprobs)
