"""The learner rank as it was before sharded initialisation, packing, response-only logits and
bfloat16 compute (amray commit cd65036), kept only so the benchmarks can measure what those
changes gained on the same machine in the same run. Not used by amray itself.

What it does differently: every rank loads the whole float32 model before sharding it; rows are
right-padded to the longest of their micro-batch (rows x longest <= micro_batch_tokens); the
vocabulary projection and log-softmax run at every position, prompts included; float32 compute.
"""

from __future__ import annotations

import os
import time

import numpy as np
import ray
import torch
import torch.distributed as dist

from amray.batch import TrainBatch
from amray.memory import peak_rss_bytes, reset_peak_rss
from amray.microbatch import pad_plan


def pad(batch: TrainBatch, idx: list[int]) -> dict[str, torch.Tensor]:
    T, B = max(len(batch.tokens[i]) for i in idx), len(idx)
    tokens, attn = torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T, dtype=torch.long)
    mask, slp = torch.zeros(B, T - 1), torch.zeros(B, T - 1)
    for r, i in enumerate(idx):
        n = len(batch.tokens[i])
        tokens[r, :n] = torch.as_tensor(np.asarray(batch.tokens[i], dtype=np.int64))
        attn[r, :n] = 1
        mask[r, :n - 1] = torch.as_tensor(np.asarray(batch.loss_mask[i][1:], dtype=np.float32))
        if batch.sample_logprobs is not None:
            slp[r, :n - 1] = torch.as_tensor(np.asarray(batch.sample_logprobs[i][1:], dtype=np.float32))
    adv = torch.tensor(batch.advantages[idx], dtype=torch.float32)
    return {"tokens": tokens, "attn": attn, "mask": mask, "sample_logprobs": slp, "adv": adv}


def token_logprobs(model: torch.nn.Module, tokens: torch.Tensor, attn: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = model(input_ids=tokens, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


@ray.remote
class BaselineLearnerRank:
    def __init__(self, rank: int, world_size: int, model_dir: str, micro_batch_tokens: int, threads: int) -> None:
        self.rank, self.world_size, self.model_dir, self.micro_batch_tokens = rank, world_size, model_dir, micro_batch_tokens
        torch.set_num_threads(threads)
        torch.manual_seed(0)

    def address(self) -> tuple[str, int]:
        import socket

        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def setup(self, master_addr: str, master_port: int) -> int:
        """The old build: from_pretrained on every rank, then fully_shard. Returns its peak RSS."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        from transformers import AutoModelForCausalLM

        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = master_addr, str(master_port)
        dist.init_process_group("gloo", rank=self.rank, world_size=self.world_size)
        reset_peak_rss()
        mp = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
        m = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        for layer in m.model.layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(m, mp_policy=mp)
        self.model = m.train()
        self.optimizer = torch.optim.AdamW(m.parameters(), lr=1e-6)
        return peak_rss_bytes()

    def train_step(self, batch: TrainBatch, loss) -> dict[str, float]:
        """One update (the old accumulate + finish); seconds and peak RSS of the step."""
        reset_peak_rss()
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        plan = pad_plan([len(t) for t in batch.tokens], self.micro_batch_tokens) if len(batch) else []
        t = torch.tensor([len(plan)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        empty = {"tokens": torch.zeros(1, 2, dtype=torch.long), "attn": torch.ones(1, 2, dtype=torch.long),
                 "mask": torch.zeros(1, 1), "sample_logprobs": torch.zeros(1, 1), "adv": torch.zeros(1)}
        tokens = 0.0
        for mb in [pad(batch, idx) for idx in plan] + [empty] * int(t.item() - len(plan)):
            logp = token_logprobs(self.model, mb["tokens"], mb["attn"], loss.temperature)
            terms = loss(logp, mb, None)
            (terms.loss_sum * self.world_size).backward()
            tokens += float(mb["mask"].sum())
        total = torch.tensor([tokens], dtype=torch.float64)
        dist.all_reduce(total)
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 / max(1.0, total.item()))
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return {"seconds": time.perf_counter() - t0, "peak_rss": peak_rss_bytes()}
