"""Learner: one FSDP2 rank per Ray actor; `LearnerGroup` drives all ranks as one.

Public protocol of a rank (the group calls every rank with the same method):
    configure(lr, total_steps, warmup_steps, min_lr_ratio)  new optimizer + warmup/cosine schedule
    train_step(batch, objective, temperature)  -> metrics   one optimizer update (grad accumulation inside)
    pack_weights()                              -> PackedWeights on rank 0, None elsewhere
    sequence_logprobs(token_ids, start, temperature) -> np.ndarray
    save(path)
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

import numpy as np
import ray
import torch
import torch.distributed as dist

from amray.config import GRPOConfig, TrainerConfig
from amray.grpo import policy_loss
from amray.weight_sync import PackedWeights, pack_weights


@dataclass
class TrainBatch:
    """Rows to learn from. `loss_mask` marks the tokens that are trained (response / assistant
    tokens); `sample_logprobs` holds vLLM's sampling logprobs at those positions (GRPO only)."""

    tokens: list[np.ndarray]
    loss_mask: list[np.ndarray]
    advantages: np.ndarray | None = None
    sample_logprobs: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, idx: list[int]) -> "TrainBatch":
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        adv = None if self.advantages is None else self.advantages[idx]
        return TrainBatch(pick(self.tokens), pick(self.loss_mask), adv, pick(self.sample_logprobs))


def micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Greedy packing by length: each micro-batch's padded size (rows x longest) fits the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and new_longest * (len(current) + 1) > token_budget:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def token_logprobs(model: torch.nn.Module, tokens: torch.Tensor, attn: torch.Tensor, temperature: float) -> torch.Tensor:
    """logprob of tokens[:, t] given tokens[:, :t], at positions 1..T-1 -> [B, T-1]."""
    logits = model(input_ids=tokens, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


@ray.remote
class LearnerRank:
    def __init__(self, rank: int, world_size: int, model_dir: str, cfg: TrainerConfig, grpo: GRPOConfig) -> None:
        self.rank, self.world_size, self.cfg, self.grpo = rank, world_size, cfg, grpo
        self.model_dir = model_dir
        self.device = torch.device("cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        self.backend = cfg.backend if cfg.backend != "auto" else ("nccl" if self.device.type == "cuda" else "gloo")
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)

    def address(self) -> tuple[str, int]:
        """Rank 0 picks the rendezvous address for the process group."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str, master_port: int) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        from transformers import AutoModelForCausalLM

        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = master_addr, str(master_port)
        dist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[self.cfg.dtype]
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)

        def build(trainable: bool) -> torch.nn.Module:
            m = AutoModelForCausalLM.from_pretrained(self.model_dir, torch_dtype=torch.float32).to(self.device)
            if trainable and self.cfg.gradient_checkpointing:
                m.gradient_checkpointing_enable()
            for layer in m.model.layers:  # one FSDP unit per decoder layer, then the rest
                fully_shard(layer, mp_policy=mp)
            fully_shard(m, mp_policy=mp)
            m.train(trainable)
            return m

        self.model = build(True)
        # Optional frozen reference for the k3 KL term (AM-Thinking uses none).
        self.ref = build(False) if self.grpo.kl_coef > 0 else None
        if self.ref is not None:
            self.ref.requires_grad_(False)
        self.configure(self.cfg.lr, 1, self.cfg.warmup_steps, self.cfg.min_lr_ratio)

    def configure(self, lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=tuple(self.cfg.betas),
                                           weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, min_lr_ratio))

    def _pad(self, batch: TrainBatch, idx: list[int]) -> dict[str, torch.Tensor]:
        T = max(len(batch.tokens[i]) for i in idx)
        B = len(idx)
        tokens = torch.zeros(B, T, dtype=torch.long)
        attn = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T - 1)
        slp = torch.zeros(B, T - 1)
        for r, i in enumerate(idx):
            n = len(batch.tokens[i])
            tokens[r, :n] = torch.as_tensor(np.array(batch.tokens[i], dtype=np.int64))
            attn[r, :n] = 1
            mask[r, : n - 1] = torch.as_tensor(np.array(batch.loss_mask[i][1:], dtype=np.float32))
            if batch.sample_logprobs is not None:
                slp[r, : n - 1] = torch.as_tensor(np.array(batch.sample_logprobs[i][1:], dtype=np.float32))
        adv = torch.zeros(B) if batch.advantages is None else torch.tensor(batch.advantages[idx], dtype=torch.float32)
        out = {"tokens": tokens, "attn": attn, "mask": mask, "sample_logprobs": slp, "adv": adv}
        return {k: v.to(self.device) for k, v in out.items()}

    def _all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def train_step(self, batch: TrainBatch, objective: str = "grpo", temperature: float = 1.0) -> dict[str, float]:
        """One optimizer update over this rank's rows. objective: `grpo` (PPO-clip on advantages)
        or `sft` (next-token NLL on masked tokens). Loss is a token-mean over all ranks' tokens."""
        lengths = [len(t) for t in batch.tokens]
        mbs = micro_batches(lengths, self.cfg.micro_batch_tokens) if len(batch) else []
        # FSDP collectives run per forward/backward: every rank must run the same number.
        n_mb = self._max_int(len(mbs))
        local_tokens = float(sum(float(np.sum(m[1:])) for m in batch.loss_mask))
        global_tokens = max(1.0, self._all_sum([local_tokens])[0])
        scale = self.world_size / global_tokens  # FSDP averages grads over ranks; undo that
        stats = np.zeros(5)  # loss_sum, clipped, kl_sum, |vllm - learner| sum, trained tokens
        self.optimizer.zero_grad(set_to_none=True)
        for k in range(n_mb):
            dummy = k >= len(mbs)  # padding micro-batch: joins the collectives, contributes nothing
            idx = mbs[k] if not dummy else (mbs[0][:1] if mbs else None)
            if idx is None:
                mb = {"tokens": torch.zeros(1, 2, dtype=torch.long, device=self.device),
                      "attn": torch.ones(1, 2, dtype=torch.long, device=self.device)}
                mb.update(mask=torch.zeros(1, 1, device=self.device), sample_logprobs=torch.zeros(1, 1, device=self.device),
                          adv=torch.zeros(1, device=self.device))
            else:
                mb = self._pad(batch, idx)
            mask = mb["mask"] * (0.0 if dummy else 1.0)
            logp = token_logprobs(self.model, mb["tokens"], mb["attn"], temperature)
            if objective == "sft":
                loss_sum = -(logp * mask).sum()
                terms_clipped = terms_kl = torch.zeros(())
            else:
                ref = None
                if self.ref is not None:
                    with torch.no_grad():
                        ref = token_logprobs(self.ref, mb["tokens"], mb["attn"], temperature)
                # Strict on-policy, one update per batch: the old policy is the current one.
                terms = policy_loss(logp, logp.detach(), mb["adv"], mask, self.grpo.clip_eps_low,
                                    self.grpo.clip_eps_high, ref, self.grpo.kl_coef)
                loss_sum, terms_clipped, terms_kl = terms.loss_sum, terms.clipped_tokens, terms.kl_sum
            (loss_sum * scale).backward()
            with torch.no_grad():
                mismatch = ((logp.detach() - mb["sample_logprobs"]).abs() * mask).sum()
            stats += [float(loss_sum.detach()), float(terms_clipped), float(terms_kl), float(mismatch), float(mask.sum())]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        s = self._all_sum(stats.tolist())
        tokens = max(1.0, s[4])
        return {"loss": s[0] / tokens, "clip_frac": s[1] / tokens, "kl": s[2] / tokens,
                "logprob_mismatch": s[3] / tokens, "tokens": s[4], "grad_norm": float(grad_norm), "lr": lr}

    def _max_int(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def pack_weights(self) -> PackedWeights | None:
        """Gather the full state dict (a collective: every rank calls); rank 0 packs it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank != 0:
            return None
        return pack_weights(list(sd.items()))

    def init_weight_transfer(self, backend: str, engines: list, master_addr: str, master_port: int,
                             engine_ranks: int) -> None:
        """GPU sync through vLLM's own weight-transfer engines; rank 0 is the sender, the other
        ranks only join the FSDP all-gather of each parameter."""
        from vllm.distributed.weight_transfer.base import ModuleSource
        from vllm.distributed.weight_transfer.clients import RayVLLMWeightSyncClient
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        if backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo
            info = NCCLTrainerInitInfo(master_addr, master_port, 1 + engine_ranks, rank=self.rank)
        elif backend == "ipc":
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo
            info = IPCTrainerInitInfo(rank=self.rank)
        else:
            raise ValueError(f"sync.backend={backend!r}: the learner drives only `nccl` or `ipc`")
        self.transfer = WeightTransferTrainerFactory.trainer_init(
            info, client=RayVLLMWeightSyncClient(engines), source=ModuleSource(self.model))

    def send_weights(self) -> None:
        self.transfer.send_weights()

    @torch.no_grad()
    def sequence_logprobs(self, token_ids: list[int], start: int = 1, temperature: float = 1.0) -> np.ndarray:
        tokens = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        self.model.eval()
        logp = token_logprobs(self.model, tokens, torch.ones_like(tokens), temperature)[0, start - 1:]
        self.model.train()
        return logp.float().cpu().numpy()

    def save(self, path: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank == 0:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(self.model_dir, torch_dtype=torch.float32)
            model.load_state_dict(sd)
            model.save_pretrained(path, safe_serialization=True)
            AutoTokenizer.from_pretrained(self.model_dir).save_pretrained(path)
        dist.barrier()


class LearnerGroup:
    """All FSDP ranks as one: every call fans out to every rank and returns rank 0's answer."""

    def __init__(self, model_dir: str, cfg: TrainerConfig, grpo: GRPOConfig) -> None:
        opts = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
        n = cfg.num_workers
        self.ranks = [LearnerRank.options(**opts).remote(r, n, model_dir, cfg, grpo) for r in range(n)]
        addr, port = ray.get(self.ranks[0].address.remote())
        ray.get([r.setup.remote(addr, port) for r in self.ranks])

    def _all(self, method: str, *args) -> list:
        return ray.get([getattr(r, method).remote(*args) for r in self.ranks])

    def configure(self, lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 1.0) -> None:
        self._all("configure", lr, total_steps, warmup_steps, min_lr_ratio)

    def train_step(self, batch: TrainBatch, objective: str = "grpo", temperature: float = 1.0) -> dict[str, float]:
        """Split rows over ranks balanced by tokens (longest first, to the lightest rank)."""
        shards: list[list[int]] = [[] for _ in self.ranks]
        load = [0] * len(self.ranks)
        for i in sorted(range(len(batch)), key=lambda i: -len(batch.tokens[i])):
            r = load.index(min(load))
            shards[r].append(i)
            load[r] += len(batch.tokens[i])
        refs = [rank.train_step.remote(batch.select(s), objective, temperature) for rank, s in zip(self.ranks, shards)]
        return ray.get(refs)[0]

    def pack_weights_ref(self) -> ray.ObjectRef:
        """ObjectRef of rank 0's packed weights; the other ranks join the gather."""
        refs = [r.pack_weights.remote() for r in self.ranks]
        ray.get(refs[1:])
        return refs[0]

    def init_weight_transfer(self, backend: str, engines: list, engine_ranks: int) -> None:
        addr, port = ray.get(self.ranks[0].address.remote())
        self._all("init_weight_transfer", backend, engines, addr, port, engine_ranks)

    def send_weights(self) -> None:
        self._all("send_weights")

    def sequence_logprobs(self, token_ids: list[int], start: int = 1, temperature: float = 1.0) -> np.ndarray:
        return self._all("sequence_logprobs", token_ids, start, temperature)[0]

    def save(self, path: str) -> None:
        self._all("save", path)

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)
