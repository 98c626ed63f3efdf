"""A model's shape, as the capacity plan needs it: from a local config.json, a built-in model, or
the name of a known architecture (for a config whose weights are not on this machine)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

# config.json fields of the bases the shipped configs name (Qwen2.5 model cards).
KNOWN = {
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "qwen2.5-14b": dict(vocab_size=152064, hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                        num_attention_heads=40, num_key_value_heads=8, tie_word_embeddings=False),
    "qwen2.5-32b": dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                        num_attention_heads=40, num_key_value_heads=8, tie_word_embeddings=False),
    "qwen2.5-72b": dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False),
}


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer (Qwen2 / Llama layout: GQA attention, gated MLP, RMSNorm)."""

    name: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool

    @classmethod
    def from_hf_config(cls, config: dict, name: str = "") -> ModelShape:
        heads = config["num_attention_heads"]
        return cls(name=name or config.get("_name_or_path", "") or config.get("model_type", "model"),
                   vocab=config["vocab_size"], hidden=config["hidden_size"],
                   intermediate=config["intermediate_size"], layers=config["num_hidden_layers"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads,
                   head_dim=config.get("head_dim") or config["hidden_size"] // heads,
                   tied=bool(config.get("tie_word_embeddings", False)),
                   qkv_bias=bool(config.get("attention_bias", config.get("model_type", "qwen2") == "qwen2")))

    @property
    def q(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_tensors(self) -> list[tuple[int, int]]:
        """(rows, columns) of one decoder layer's tensors (a vector has one column)."""
        h, q, kv, i = self.hidden, self.q, self.kv, self.intermediate
        bias = [(q, 1), (kv, 1), (kv, 1)] if self.qkv_bias else []
        return [(q, h), (kv, h), (kv, h), (h, q), *bias, (i, h), (i, h), (h, i), (h, 1), (h, 1)]

    def root_tensors(self) -> list[tuple[int, int]]:
        """The embedding, the head (unless tied to it) and the final norm."""
        return [(self.vocab, self.hidden)] * (1 if self.tied else 2) + [(self.hidden, 1)]

    def tensors(self) -> list[tuple[int, int]]:
        return self.layer_tensors() * self.layers + self.root_tensors()

    @property
    def layer_params(self) -> int:
        return sum(r * c for r, c in self.layer_tensors())

    @property
    def root_params(self) -> int:
        return sum(r * c for r, c in self.root_tensors())

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params

    def sharded_params(self, ranks: int) -> int:
        """Elements of the largest rank's FSDP2 shards (each tensor's rows split in ceil-sized
        chunks; FSDP pads every rank's parameter storage to that size)."""
        return sum(math.ceil(r / ranks) * c for r, c in self.tensors())

    def rank_params(self, ranks: int, rank: int) -> int:
        """Elements of rank `rank`'s shards without padding (what its optimizer state holds)."""
        def rows(r: int) -> int:
            chunk = math.ceil(r / ranks)
            return max(0, min(r, (rank + 1) * chunk) - min(r, rank * chunk))

        return sum(rows(r) * c for r, c in self.tensors())


def model_shape(path: str, architecture: str = "", cache_dir: str = ".cache/amray/models") -> ModelShape:
    """`architecture` (a known name or a config.json path) when given, else model.path's
    config.json (a built-in model is built or resolved first)."""
    if architecture:
        key = architecture.lower()
        if key in KNOWN:
            return ModelShape.from_hf_config({**KNOWN[key], "model_type": "qwen2"}, key)
        file = Path(architecture).expanduser()
        file = file / "config.json" if file.is_dir() else file
        if not file.is_file():
            raise ValueError(f"model.architecture={architecture!r}: neither a known architecture "
                             f"({', '.join(KNOWN)}) nor a config.json file")
        return ModelShape.from_hf_config(json.loads(file.read_text()), architecture)
    if path in ("tiny", "smollm2"):
        from amray.models import resolve_model

        return ModelShape.from_hf_config(json.loads((resolve_model(path, cache_dir) / "config.json").read_text()), path)
    file = Path(path).expanduser() / "config.json"
    if not file.is_file():
        raise ValueError(f"model.path={path!r} has no config.json on this machine: set model.architecture to one of "
                         f"{', '.join(KNOWN)} or to a config.json path so the plan knows the model's shape")
    return ModelShape.from_hf_config(json.loads(file.read_text()), path)
