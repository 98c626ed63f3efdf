"""Learner: one FSDP2 rank per Ray actor; `LearnerGroup` drives all ranks as one.

Public protocol of a rank (the group calls every rank with the same method):
    configure(lr, total_steps, warmup_steps, min_lr_ratio)  new optimizer + warmup/cosine schedule
    train_step(batch, loss)                     -> metrics  one optimizer update (grad accumulation inside)
    begin_update(), accumulate(batch, loss), finish_update() -> metrics   the same, streamed in parts
    pack_weights()                              -> PackedWeights on rank 0, None elsewhere
    pack_shard()                                -> PackedWeights: this rank's rows only (no collective)
    init_weight_transfer(...), send_weights()               the GPU weight-sync sender (amray/weight_sync)
    sequence_logprobs(token_ids, start, temperature) -> np.ndarray
    save(path)
    measure_memory(batch, loss)                 -> bytes held   one update, measured (amray.plan's check)
`loss` is an objective object (`grpo.GRPOLoss`, `sft.SFTLoss`): called on each micro-batch's
logprobs, it returns the summed loss terms; the rank does not know which objective it runs.

The model is a `policy.Policy` built by `sharded_init.build_policy` (meta device, FSDP2, each rank
reading only its own rows of the weights); micro-batches are packed rows (`microbatch.py`) and
the model scores only the positions the loss reads (response / assistant tokens), in bfloat16
where `trainer.dtype` says so, with float32 master weights and optimizer state.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import time
from contextlib import nullcontext

import numpy as np
import ray
import torch
import torch.distributed as dist

from amray.actors import call_all, fan_out, in_bundle, placement, release
from amray.batch import TrainBatch
from amray.config import TrainerConfig
from amray.memory import SavedActivations, peak_rss_bytes, reset_peak_rss, state_bytes
from amray.microbatch import balance, empty_micro_batch, micro_batch, micro_batches, policy_inputs, prefixes
from amray.policy import SDPA_VARLEN, Policy, attention_implementation, compute_dtype
from amray.rayenv import cpu_allocator_env
from amray.sharded_init import build_policy
from amray.weight_sync.packing import PackedWeights, pack_shard, pack_weights


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def shares_prompts(cfg: TrainerConfig, attention: str, device: torch.device) -> bool:
    """`trainer.share_prompts` where it runs: packed rows under amray's SDPA attention, on a CPU.
    On a GPU, PyTorch's varlen flash kernel runs a whole packed micro-batch in one call, and the
    shared layout would fall back to one SDPA call per response (kernel-launch bound: 8x slower
    per sequence there); flash-attn keeps rows one by one too."""
    return cfg.packing and cfg.share_prompts and attention == SDPA_VARLEN and device.type == "cpu"


@ray.remote
class LearnerRank:
    def __init__(self, rank: int, world_size: int, model_dir: str, cfg: TrainerConfig, reference: bool) -> None:
        self.rank, self.world_size, self.cfg, self.model_dir = rank, world_size, cfg, model_dir
        self.with_reference = reference
        self.device = torch.device("cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        self.backend = cfg.backend if cfg.backend != "auto" else ("nccl" if self.device.type == "cuda" else "gloo")
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.saved_activations = nullcontext()  # a SavedActivations tally while measure_memory runs

    def address(self) -> tuple[str, int]:
        """Rank 0 picks the rendezvous address for the process group."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str, master_port: int) -> dict[str, str | int]:
        """Join the process group and build the sharded model (each rank reads only its own
        slices of the weights: amray/sharded_init.py). Returns what it chose and what it cost:
        compute dtype, attention, bytes read from the checkpoint, peak resident memory."""
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = master_addr, str(master_port)
        if not dist.is_initialized():  # a rank rebuilt in the same process keeps its group
            dist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size)
        reset_peak_rss()
        dtype = compute_dtype(self.cfg.dtype, self.device)
        self.compute_dtype = str(dtype).removeprefix("torch.")
        attention = attention_implementation(self.device)
        self.share_prompts = shares_prompts(self.cfg, attention, self.device)

        def build(trainable: bool) -> Policy:
            return build_policy(self.model_dir, self.device, dtype, attention, self.cfg.logprob_chunk_tokens,
                                trainable, trainable and self.cfg.gradient_checkpointing)

        self.model = build(True)
        # Optional frozen reference for the k3 KL term (AM-Thinking uses none).
        self.ref = build(False) if self.with_reference else None
        self.configure(self.cfg.lr, 1, self.cfg.warmup_steps, self.cfg.min_lr_ratio)
        return {"dtype": str(dtype).removeprefix("torch."), "attention": attention, "share_prompts": self.share_prompts,
                "checkpoint_bytes_read": self.model.checkpoint_bytes_read, "setup_peak_rss": peak_rss_bytes()}

    def configure(self, lr: float, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=tuple(self.cfg.betas),
                                           weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, min_lr_ratio))

    def begin_update(self) -> None:
        """Start accumulating one optimizer update."""
        self.optimizer.zero_grad(set_to_none=True)
        self.sums: dict[str, float] = {}  # the loss terms' sums over this rank's tokens (LossTerms.sums)

    def accumulate(self, batch: TrainBatch, loss) -> float:
        """Forward/backward of this rank's rows, adding to the update's gradients the gradient of
        the *summed* loss (the token-mean's divisor is known only once every row has arrived).
        Returns the seconds it took (the driver reports training overlapped with generation)."""
        t0 = time.perf_counter()
        packed = self.cfg.packing
        shared = prefixes(batch) if self.share_prompts else None
        plan = micro_batches([len(t) for t in batch.tokens], self.cfg.micro_batch_tokens, packed, shared) \
            if len(batch) else []
        padding = self._all([len(plan)], dist.ReduceOp.MAX)[0] - len(plan)
        mbs = itertools.chain((micro_batch(batch, idx, packed, self.device, shared) for idx in plan),
                              (empty_micro_batch(self.device) for _ in range(int(padding))))
        for mb in mbs:
            with self.saved_activations:
                logp = self.model(**policy_inputs(mb), temperature=loss.temperature).unsqueeze(-1)  # [N, 1]
                ref = None
                if self.ref is not None and loss.needs_reference:
                    with torch.no_grad():
                        ref = self.ref(**policy_inputs(mb), temperature=loss.temperature).unsqueeze(-1)
                terms = loss(logp, mb, ref)
            (terms.loss_sum * self.world_size).backward()  # FSDP averages grads over ranks; undo that
            for name, value in terms.sums(mb["mask"]).items():
                self.sums[name] = self.sums.get(name, 0.0) + value
        return time.perf_counter() - t0

    def finish_update(self) -> dict[str, float]:
        """Token-mean over every rank's tokens of every accumulated batch, then one optimizer step.
        Metrics: each loss term's token-mean (`loss`, `clip_frac`, ...), `tokens`, `grad_norm`, `lr`."""
        names = sorted(self.sums)  # the same terms on every rank (the same loss ran everywhere)
        totals = dict(zip(names, self._all([self.sums[n] for n in names]))) if names else {}
        tokens = max(1.0, totals.pop("tokens", 0.0))
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 / tokens)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        return {**{n: v / tokens for n, v in totals.items()}, "tokens": tokens, "grad_norm": float(grad_norm), "lr": lr}

    def train_step(self, batch: TrainBatch, loss) -> dict[str, float]:
        """One optimizer update over this rank's rows: begin, accumulate, finish."""
        self.begin_update()
        self.accumulate(batch, loss)
        return self.finish_update()

    def measure_memory(self, batch: TrainBatch, loss) -> dict[str, int]:
        """One update on this rank's rows, measured (what `python -m amray.plan` predicts): bytes
        of its parameter shards, gradients, optimizer state, the activations autograd kept for
        backward in its largest micro-batch, and its peak resident memory during the update."""
        self.saved_activations = SavedActivations()
        reset_peak_rss()
        try:
            self.train_step(batch, loss)
            tally = self.saved_activations
        finally:
            self.saved_activations = nullcontext()
        return {**state_bytes(self.model, self.optimizer), "activations": tally.peak, "peak_rss": peak_rss_bytes()}

    def _all(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def pack_weights(self) -> PackedWeights | None:
        """Gather the full state dict (a collective: every rank calls); rank 0 packs it."""
        sd = self.model.full_state_dict()
        return pack_weights(list(sd.items())) if self.rank == 0 else None

    def pack_shard(self) -> PackedWeights:
        """This rank's own rows of every weight (FSDP2 dim-0 shards), packed with no collective:
        every rank packs at once and the engines assemble the parts (`packing.assemble`). A tied
        LM head goes too: vLLM's CPU backend keeps a repacked copy of it that the embedding's
        reload does not refresh."""
        from torch.distributed.tensor import DTensor, Shard

        from amray.sharded_init import shard_rows

        named = []
        for name, t in self.model.lm.state_dict().items():
            local = t.to_local() if isinstance(t, DTensor) else t
            if isinstance(t, DTensor):
                if tuple(t.placements) != (Shard(0),):
                    raise ValueError(f"{name}: placements {t.placements}; the object-store sync packs dim-0 shards")
                start, stop = shard_rows(t.shape[0], self.rank, self.world_size)
            elif self.rank == 0:  # not sharded: whole, from rank 0
                start, stop = 0, (t.shape[0] if t.dim() else 1)
            else:
                continue
            named.append((name, list(t.shape), start, stop, local.detach().cpu()))
        return pack_shard(named)

    def init_weight_transfer(self, backend: str, engines: list, master_addr: str, master_port: int,
                             engine_ranks: int) -> None:
        import importlib

        side = importlib.import_module(f"amray.weight_sync.{backend}").trainer_side  # nccl.py / ipc.py
        self.transfer = side(self.model.lm, engines, master_addr, master_port, engine_ranks, self.rank)

    def send_weights(self) -> None:
        self.transfer.send_weights()

    @torch.no_grad()
    def sequence_logprobs(self, token_ids: list[int], start: int = 1, temperature: float = 1.0) -> np.ndarray:
        """logprob of each token from `start` on, given the ones before it."""
        tokens = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        predict = torch.arange(start - 1, len(token_ids) - 1, device=self.device)
        self.model.eval()
        logp = self.model(tokens, torch.arange(len(token_ids), device=self.device).unsqueeze(0), predict,
                          tokens[0, start:], temperature)
        self.model.train()
        return logp.float().cpu().numpy()

    def save_checkpoint(self, path: str) -> None:
        """This rank's shards of model, optimizer and schedule into checkpoint directory `path`."""
        from amray.checkpoint import save_learner

        save_learner(path, self.model.lm, self.optimizer, self.scheduler)

    def load_checkpoint(self, path: str) -> None:
        from amray.checkpoint import load_learner

        load_learner(path, self.model.lm, self.optimizer, self.scheduler)

    def save(self, path: str, dtype: str = "") -> None:
        """A Hugging Face directory of the current weights in `dtype` (default: the compute dtype),
        written by rank 0 from the gathered state dict, with no second copy of the model loaded."""
        from amray.checkpoint import write_hf_model

        sd = self.model.full_state_dict()
        if self.rank == 0:
            write_hf_model(path, sd, self.model_dir, dtype or self.compute_dtype)
        dist.barrier()


class LearnerGroup:
    """All FSDP ranks as one: every call fans out to every rank and returns rank 0's answer.
    `reference`: also hold a frozen copy of the start model (for a KL term)."""

    def __init__(self, model_dir: str, cfg: TrainerConfig, reference: bool = False,
                 placement_timeout_s: float = 900.0) -> None:
        self.model_dir = model_dir
        n = cfg.num_workers
        # Ranks packed onto as few nodes as fit (their collectives stay inside a node where they can).
        self.group = placement({"CPU": cfg.num_cpus, "GPU": cfg.num_gpus, **cfg.resources}, n, "PACK",
                               "learner ranks", placement_timeout_s)
        opts = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus, "resources": cfg.resources}
        if cfg.num_gpus == 0:  # tcmalloc, or glibc told to return freed activations (rayenv.py)
            opts["runtime_env"] = {"env_vars": cpu_allocator_env()}
        self.ranks = [LearnerRank.options(**opts, **in_bundle(self.group, r)).remote(r, n, model_dir, cfg, reference)
                      for r in range(n)]
        addr, port = ray.get(self.ranks[0].address.remote())
        self.setup_info = call_all(self.ranks, "setup", addr, port)
        """Per rank: compute `dtype`, `attention`, `share_prompts`, `checkpoint_bytes_read`, `setup_peak_rss`."""
        self.share_prompts = all(info["share_prompts"] for info in self.setup_info)
        """Rows of one prompt are laid out with the prompt once (`trainer.share_prompts`, where it applies)."""

    def configure(self, lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 1.0) -> None:
        call_all(self.ranks, "configure", lr, total_steps, warmup_steps, min_lr_ratio)

    def shards(self, batch: TrainBatch) -> list[TrainBatch]:
        """Rows split over ranks balanced by tokens (longest first, to the lightest rank; a rank
        that already holds a row's prompt counts only its response: `microbatch.balance`)."""
        parts = balance([len(t) for t in batch.tokens], len(self.ranks),
                        prefixes(batch) if self.share_prompts else None)
        return [batch.select(p) for p in parts]

    def train_step(self, batch: TrainBatch, loss) -> dict[str, float]:
        """One optimizer update on `batch` (token-mean loss over all of it)."""
        return ray.get([r.train_step.remote(s, loss) for r, s in zip(self.ranks, self.shards(batch))])[0]

    # A streamed update: begin, accumulate as groups arrive (calls return at once; each rank runs
    # them in order), finish. Equal to one train_step on all the rows, up to float summation order.
    def begin_update(self) -> None:
        fan_out(self.ranks, "begin_update")

    def accumulate(self, batch: TrainBatch, loss) -> list[ray.ObjectRef]:
        """Refs resolving to each rank's seconds of forward/backward."""
        return [r.accumulate.remote(s, loss) for r, s in zip(self.ranks, self.shards(batch))]

    def finish_update(self, wait: bool = True) -> dict[str, float] | list[ray.ObjectRef]:
        """Rank 0's metrics (or, with wait=False, the refs: rank 0's first)."""
        refs = fan_out(self.ranks, "finish_update")
        return ray.get(refs)[0] if wait else refs

    def pack_weights(self) -> list[ray.ObjectRef]:
        """Every rank joins the gather; the first ref (rank 0's) holds the packed weights."""
        return fan_out(self.ranks, "pack_weights")

    def pack_shards(self) -> list[ray.ObjectRef]:
        """Each rank's own rows, packed in parallel (no gather): together, the whole state dict."""
        return fan_out(self.ranks, "pack_shard")

    def init_weight_transfer(self, backend: str, engines: list, engine_ranks: int) -> list[ray.ObjectRef]:
        addr, port = ray.get(self.ranks[0].address.remote())
        return fan_out(self.ranks, "init_weight_transfer", backend, engines, addr, port, engine_ranks)

    def send_weights(self) -> list[ray.ObjectRef]:
        return fan_out(self.ranks, "send_weights")

    def sequence_logprobs(self, token_ids: list[int], start: int = 1, temperature: float = 1.0) -> np.ndarray:
        return call_all(self.ranks, "sequence_logprobs", token_ids, start, temperature)[0]

    def measure_memory(self, batch: TrainBatch, loss) -> list[dict[str, int]]:
        """One update on `batch`, measured on every rank (`LearnerRank.measure_memory`), in rank order."""
        return ray.get([r.measure_memory.remote(s, loss) for r, s in zip(self.ranks, self.shards(batch))])

    @property
    def compute_dtype(self) -> str:
        return self.setup_info[0]["dtype"]

    def save(self, path: str, dtype: str = "") -> None:
        """A Hugging Face model directory (rank 0 writes it) in `dtype` (default: the compute dtype)."""
        call_all(self.ranks, "save", path, dtype)

    def save_checkpoint(self, path: str) -> None:
        """Every rank writes its shards in parallel (amray/checkpoint.py)."""
        call_all(self.ranks, "save_checkpoint", path)

    def load_checkpoint(self, path: str) -> None:
        call_all(self.ranks, "load_checkpoint", path)

    def dead_ranks(self, timeout_s: float = 30.0) -> list[int]:
        """The ranks whose actor no longer answers."""
        dead = []
        for i, r in enumerate(self.ranks):
            try:
                ray.get(r.__ray_ready__.remote(), timeout=timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                dead.append(i)
        return dead

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)
        release(self.group)
