"""Learner: one FSDP2 rank per Ray actor; `LearnerGroup` drives all ranks as one.

Public protocol of a rank (the group calls every rank with the same method):
    configure(lr, total_steps, warmup_steps, min_lr_ratio)  new optimizer + warmup/cosine schedule
    train_step(batch, loss)                     -> metrics  one optimizer update (grad accumulation inside)
    begin_update(), accumulate(batch, loss), finish_update() -> metrics   the same, streamed in parts
    pack_weights()                              -> PackedWeights on rank 0, None elsewhere
    init_weight_transfer(...), send_weights()               the GPU weight-sync sender (amray/weight_sync)
    sequence_logprobs(token_ids, start, temperature) -> np.ndarray
    save(path)
`loss` is an objective object (`grpo.GRPOLoss`, `sft.SFTLoss`): called on each micro-batch's
logprobs, it returns the summed loss terms; the rank does not know which objective it runs.
"""

from __future__ import annotations

import itertools
import math
import os
import socket

import numpy as np
import ray
import torch
import torch.distributed as dist

from amray.actors import call_all, fan_out
from amray.batch import TrainBatch
from amray.config import TrainerConfig
from amray.microbatch import empty_micro_batch, micro_batches, pad, token_logprobs
from amray.weight_sync.packing import PackedWeights, pack_weights


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@ray.remote
class LearnerRank:
    def __init__(self, rank: int, world_size: int, model_dir: str, cfg: TrainerConfig, reference: bool) -> None:
        self.rank, self.world_size, self.cfg, self.model_dir = rank, world_size, cfg, model_dir
        self.with_reference = reference
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
        self.ref = build(False).requires_grad_(False) if self.with_reference else None
        self.configure(self.cfg.lr, 1, self.cfg.warmup_steps, self.cfg.min_lr_ratio)

    def configure(self, lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=tuple(self.cfg.betas),
                                           weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, min_lr_ratio))

    def begin_update(self) -> None:
        """Start accumulating one optimizer update."""
        self.optimizer.zero_grad(set_to_none=True)
        self.stats = np.zeros(5)  # loss_sum, clipped, kl_sum, |vllm - learner| sum, trained tokens

    def accumulate(self, batch: TrainBatch, loss) -> None:
        """Forward/backward of this rank's rows, adding to the update's gradients the gradient of
        the *summed* loss (the token-mean's divisor is known only once every row has arrived)."""
        plan = micro_batches([len(t) for t in batch.tokens], self.cfg.micro_batch_tokens) if len(batch) else []
        padding = self._all([len(plan)], dist.ReduceOp.MAX)[0] - len(plan)
        mbs = itertools.chain((pad(batch, idx, self.device) for idx in plan),
                              (empty_micro_batch(self.device) for _ in range(int(padding))))
        for mb in mbs:
            logp = token_logprobs(self.model, mb["tokens"], mb["attn"], loss.temperature)
            ref = None
            if self.ref is not None and loss.needs_reference:
                with torch.no_grad():
                    ref = token_logprobs(self.ref, mb["tokens"], mb["attn"], loss.temperature)
            terms = loss(logp, mb, ref)
            (terms.loss_sum * self.world_size).backward()  # FSDP averages grads over ranks; undo that
            self.stats += [float(terms.loss_sum.detach()), float(terms.clipped_tokens), float(terms.kl_sum),
                           float(terms.mismatch_sum), float(mb["mask"].sum())]

    def finish_update(self) -> dict[str, float]:
        """Token-mean over every rank's tokens of every accumulated batch, then one optimizer step."""
        s = self._all(self.stats.tolist())
        tokens = max(1.0, s[4])
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 / tokens)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": s[0] / tokens, "clip_frac": s[1] / tokens, "kl": s[2] / tokens,
                "logprob_mismatch": s[3] / tokens, "tokens": s[4], "grad_norm": float(grad_norm), "lr": lr}

    def train_step(self, batch: TrainBatch, loss) -> dict[str, float]:
        """One optimizer update over this rank's rows: begin, accumulate, finish."""
        self.begin_update()
        self.accumulate(batch, loss)
        return self.finish_update()

    def _all(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def pack_weights(self) -> PackedWeights | None:
        """Gather the full state dict (a collective: every rank calls); rank 0 packs it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return pack_weights(list(sd.items())) if self.rank == 0 else None

    def init_weight_transfer(self, backend: str, engines: list, master_addr: str, master_port: int,
                             engine_ranks: int) -> None:
        import importlib

        side = importlib.import_module(f"amray.weight_sync.{backend}").trainer_side  # nccl.py / ipc.py
        self.transfer = side(self.model, engines, master_addr, master_port, engine_ranks, self.rank)

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
    """All FSDP ranks as one: every call fans out to every rank and returns rank 0's answer.
    `reference`: also hold a frozen copy of the start model (for a KL term)."""

    def __init__(self, model_dir: str, cfg: TrainerConfig, reference: bool = False) -> None:
        opts = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
        n = cfg.num_workers
        self.ranks = [LearnerRank.options(**opts).remote(r, n, model_dir, cfg, reference) for r in range(n)]
        addr, port = ray.get(self.ranks[0].address.remote())
        call_all(self.ranks, "setup", addr, port)

    def configure(self, lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 1.0) -> None:
        call_all(self.ranks, "configure", lr, total_steps, warmup_steps, min_lr_ratio)

    def shards(self, batch: TrainBatch) -> list[TrainBatch]:
        """Rows split over ranks balanced by tokens (longest first, to the lightest rank)."""
        shards: list[list[int]] = [[] for _ in self.ranks]
        load = [0] * len(self.ranks)
        for i in sorted(range(len(batch)), key=lambda i: -len(batch.tokens[i])):
            r = load.index(min(load))
            shards[r].append(i)
            load[r] += len(batch.tokens[i])
        return [batch.select(s) for s in shards]

    def train_step(self, batch: TrainBatch, loss) -> dict[str, float]:
        """One optimizer update on `batch` (token-mean loss over all of it)."""
        return ray.get([r.train_step.remote(s, loss) for r, s in zip(self.ranks, self.shards(batch))])[0]

    # A streamed update: begin, accumulate as groups arrive (calls return at once; each rank runs
    # them in order), finish. Equal to one train_step on all the rows, up to float summation order.
    def begin_update(self) -> None:
        fan_out(self.ranks, "begin_update")

    def accumulate(self, batch: TrainBatch, loss) -> list[ray.ObjectRef]:
        return [r.accumulate.remote(s, loss) for r, s in zip(self.ranks, self.shards(batch))]

    def finish_update(self) -> dict[str, float]:
        return call_all(self.ranks, "finish_update")[0]

    def pack_weights(self) -> list[ray.ObjectRef]:
        """Every rank joins the gather; the first ref (rank 0's) holds the packed weights."""
        return fan_out(self.ranks, "pack_weights")

    def init_weight_transfer(self, backend: str, engines: list, engine_ranks: int) -> list[ray.ObjectRef]:
        addr, port = ray.get(self.ranks[0].address.remote())
        return fan_out(self.ranks, "init_weight_transfer", backend, engines, addr, port, engine_ranks)

    def send_weights(self) -> list[ray.ObjectRef]:
        return fan_out(self.ranks, "send_weights")

    def sequence_logprobs(self, token_ids: list[int], start: int = 1, temperature: float = 1.0) -> np.ndarray:
        return call_all(self.ranks, "sequence_logprobs", token_ids, start, temperature)[0]

    def save(self, path: str) -> None:
        call_all(self.ranks, "save", path)

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)
