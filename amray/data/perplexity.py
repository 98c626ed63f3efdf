"""Perplexity of a response under a causal LM, given its prompt.

ppl = exp(mean negative log-likelihood of the response tokens), the prompt (chat-templated when the
tokenizer has a template) only conditioning. The full logits of a batch are materialised
(batch x tokens x vocab floats): keep `batch_size` small for long responses and large vocabularies.
"""

from __future__ import annotations

import math
from pathlib import Path


class PerplexityScorer:
    def __init__(self, model_dir: str | Path, max_tokens: int = 4096, batch_size: int = 1,
                 device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"responses.model={str(model_dir)!r}: not a Hugging Face model directory "
                                    "(no config.json)")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = device

    def encode(self, prompt: list[dict], response: str) -> tuple[list[int], int]:
        """Token ids of prompt + response, and where the response starts (the end is cut to fit)."""
        tok = self.tokenizer
        if tok.chat_template:
            head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
            head = list(head["input_ids"])
        else:
            head = tok("\n".join(m["content"] for m in prompt) + "\n")["input_ids"]
        body = tok(response, add_special_tokens=False)["input_ids"]
        head = head[-(self.max_tokens - 1):]  # at least one response token is scored
        return (head + body)[:self.max_tokens], len(head)

    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        """Perplexity of each response (inf when it has no token)."""
        import torch

        out: list[float] = []
        for start in range(0, len(responses), self.batch_size):
            encoded = [self.encode(p, r) for p, r in zip(prompts[start:start + self.batch_size],
                                                         responses[start:start + self.batch_size])]
            width = max(len(ids) for ids, _ in encoded)
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            scored = torch.zeros_like(ids, dtype=torch.bool)
            for i, (row, head) in enumerate(encoded):
                ids[i, :len(row)] = torch.tensor(row)
                mask[i, :len(row)] = 1
                scored[i, head:len(row)] = True
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            # Token t is predicted from position t - 1.
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            target = ids[:, 1:].to(self.device)
            nll = -logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            weight = scored[:, 1:].to(self.device).float()
            for i in range(len(encoded)):
                n = weight[i].sum().item()
                out.append(math.exp((nll[i] * weight[i]).sum().item() / n) if n else math.inf)
        return out
