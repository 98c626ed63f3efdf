"""The learner's model: a causal LM whose forward returns the logprobs of the tokens the loss
reads, and nothing bigger than it has to.

- Logits only where used: the base model runs over every token for hidden states, the vocabulary
  projection only over the positions whose next token is trained (response tokens for GRPO,
  loss-mask tokens for SFT; a third of a GRPO batch's tokens are prompt tokens). It runs
  `trainer.logprob_chunk_tokens` positions at a time and each chunk's logits are recomputed in
  backward instead of kept, so no [T, V] float32 tensor exists for a long sequence (152k
  vocabulary x 24k tokens would be 14 GB).
- Packed rows: a micro-batch may be one row of several sequences back to back (`cu_seqlens`
  marks where each starts); position ids restart per sequence and attention never crosses a
  boundary: flash-attn's varlen kernel on a GPU where it is installed, else `sdpa_varlen`: on a
  GPU in bfloat16 PyTorch's own varlen flash kernel (`torch.nn.attention.varlen`, PyTorch >= 2.10),
  elsewhere SDPA run sequence by sequence (exact; no FLOPs spent on a block-diagonal mask).
- Shared prompts: a packed segment may be one prompt followed by the rests of the rows that share
  it (`segments`, amray/microbatch.py); `sdpa_varlen` runs the prompt causally, then each rest
  against the prompt's keys and its own, lower-right causal, so nothing is computed once per
  sample that is the same for all of a group's samples.
- bfloat16 compute where the hardware has it (`trainer.dtype=auto`); the parameters FSDP holds,
  the gradient reduction and the optimizer state stay float32.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

SDPA_VARLEN = "amray_sdpa_varlen"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """`trainer.dtype` -> the forward/backward dtype. `auto`: bfloat16 where the hardware computes
    it natively (a GPU with bf16; a CPU with AVX512-BF16 or AMX), else float32 (emulated bf16 on
    an older CPU is slower than float32)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if native else torch.float32
    if name not in DTYPES:
        raise ValueError(f"trainer.dtype={name!r}: use float32, bfloat16 or auto")
    return DTYPES[name]


def attention_implementation(device: torch.device) -> str:
    """flash_attention_2 on a GPU where flash-attn is installed (the `gpu` extra), else SDPA."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    register_sdpa_varlen()
    return SDPA_VARLEN


def sdpa_varlen(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                sliding_window: int | None = None, cu_seq_lens_q: torch.Tensor | None = None,
                max_length_q: int = 0, amray_segments: tuple | None = None,
                **kwargs: object) -> tuple[torch.Tensor, None]:
    """Causal SDPA within each packed sequence of [1, heads, L, d] (bounds `cu_seq_lens_q`, the
    name flash-attn's varlen path reads too). Without bounds every row is one sequence: exact for
    right-padded rows, whose real tokens never look right. `amray_segments` (start, prompt
    length, rest lengths): shared-prompt segments (`shared_prompt_attention`). Returns [B, L, heads, d]."""
    if sliding_window is not None:
        raise NotImplementedError(f"{type(module).__name__}: sliding-window attention is not supported by "
                                  "amray's packed SDPA; use a model without it or flash-attn on a GPU")
    if attention_mask is not None:
        raise ValueError("sdpa_varlen takes no attention mask: rows are packed or right-padded")
    if amray_segments is not None:
        return shared_prompt_attention(query, key, value, amray_segments, dropout, scaling), None
    if (cu_seq_lens_q is not None and query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)
            and not dropout and torch_varlen() is not None):
        return torch_varlen()(query, key, value, cu_seq_lens_q, max_length_q, scaling), None
    bounds = [0, query.shape[2]] if cu_seq_lens_q is None else cu_seq_lens_q.tolist()
    outs = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout,
                                           scale=scaling, is_causal=True, enable_gqa=True)
            for a, b in pairwise(bounds)]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def shared_prompt_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, segments: tuple,
                            dropout: float = 0.0, scaling: float | None = None) -> torch.Tensor:
    """Attention over packed [1, heads, L, d] laid out as segments (start, n, rests): positions
    start..start+n causal among themselves (a prompt, or a row alone when `rests` is empty), then
    each rest in turn: its queries see all n prompt keys and their own rest's keys up to
    themselves (a lower-right causal mask over [prompt, rest]); rests never see each other.
    Returns [1, L, heads, d]."""
    def sdpa(q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                              is_causal=mask is None, enable_gqa=True)

    outs = []
    for start, n, rests in segments:
        k0, v0 = key[:, :, start:start + n], value[:, :, start:start + n]
        outs.append(sdpa(query[:, :, start:start + n], k0, v0))
        at = start + n
        for r in rests:
            if r:
                mask = torch.ones(r, n + r, dtype=torch.bool, device=query.device).tril(n)
                outs.append(sdpa(query[:, :, at:at + r], torch.cat([k0, key[:, :, at:at + r]], 2),
                                 torch.cat([v0, value[:, :, at:at + r]], 2), mask))
            at += r
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()


@functools.cache
def torch_varlen():
    """PyTorch's varlen flash attention over packed [1, heads, L, d] -> [1, L, heads, d], or None
    where this PyTorch has none (its keyword for causal masking changed between releases)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    gqa = "enable_gqa" in params

    def run(query, key, value, cu_seqlens, max_len, scale):
        q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [L, heads, d]
        if k.shape[1] != q.shape[1] and not gqa:  # grouped-query: one K/V head serves several Q heads
            k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
        cu = cu_seqlens.to(torch.int32)
        max_len = max_len or int((cu[1:] - cu[:-1]).max())
        extra = {"enable_gqa": True} if gqa and k.shape[1] != q.shape[1] else {}
        return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale, **causal, **extra).unsqueeze(0)

    return run


def register_sdpa_varlen() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SDPA_VARLEN, sdpa_varlen)


def chunked_token_logprobs(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                           temperature: float, chunk: int) -> torch.Tensor:
    """log p(targets[i] | hidden[i]) for hidden [N, H] -> [N] float32, projecting `chunk` rows onto
    the vocabulary at a time. Under autograd each chunk is checkpointed: backward recomputes its
    logits (one more head matmul) instead of keeping N x V of them."""
    parts = []
    for start in range(0, max(len(targets), 1), chunk):  # an empty selection still runs once: FSDP needs the graph
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_logprobs, h, t, head, temperature, use_reentrant=False))
        else:
            parts.append(_logprobs(h, t, head, temperature))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _logprobs(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, temperature: float) -> torch.Tensor:
    logits = head(hidden)
    logits = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits  # float64 stays
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


class Policy(torch.nn.Module):
    """A Hugging Face causal LM (`lm`) behind a forward that returns token logprobs. It is the FSDP
    root, so its own forward gathers the embedding, final norm and head once per micro-batch while
    each decoder layer is gathered and freed by its own FSDP unit."""

    def __init__(self, lm: torch.nn.Module, logprob_chunk: int) -> None:
        super().__init__()
        self.lm = lm
        self.logprob_chunk = logprob_chunk

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.lm.get_decoder().layers

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor, predict: torch.Tensor,
                targets: torch.Tensor, temperature: float = 1.0, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int = 0, segments: tuple | None = None) -> torch.Tensor:
        """tokens, position_ids [B, L]; `predict` [N]: flat indices into B*L of the positions whose
        next token `targets` [N] is scored -> logprobs [N] (float32). `segments`: shared-prompt
        layout of a packed row (amray/microbatch.py), for amray's SDPA attention only."""
        varlen = {}
        if cu_seqlens is not None:  # packed: flash-attn's varlen kwargs; sdpa_varlen reads cu_seq_lens_q
            varlen = {"cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens,
                      "max_length_q": max_seqlen, "max_length_k": max_seqlen}
        if segments is not None:
            if self.lm.config._attn_implementation != SDPA_VARLEN:
                raise ValueError(f"shared-prompt rows need {SDPA_VARLEN} attention, not "
                                 f"{self.lm.config._attn_implementation}")
            varlen["amray_segments"] = segments
        out = self.lm.get_decoder()(input_ids=tokens, position_ids=position_ids, use_cache=False, **varlen)
        hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1]).index_select(0, predict)
        return chunked_token_logprobs(hidden, self.lm.get_output_embeddings(), targets, temperature,
                                      self.logprob_chunk)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's full state dict under its Hugging Face names, on rank 0's CPU (empty on the
        other ranks; a collective: every rank calls)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {name.removeprefix("lm."): t for name, t in sd.items()}
