"""Task rows -> tokenized chat prompts, and the sampler that draws each step's prompts."""

from __future__ import annotations

import random

from amray.batch import Prompt

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _ids(encoded: object) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True)
    return list(encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded)


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    return _ids(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt))


def prompt_messages(row: dict, system_prompt: str = "") -> list[dict]:
    """A row's `messages` if it has them, else its `prompt` text as the user turn."""
    if "messages" in row:
        messages = [m for m in row["messages"] if m["role"] != "assistant"]
    elif isinstance(row.get("prompt"), list):
        messages = list(row["prompt"])
    else:
        messages = [{"role": "user", "content": str(row["prompt"])}]
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def build_prompts(tokenizer, rows: list[dict], system_prompt: str = "") -> list[Prompt]:
    return [Prompt(row, chat_ids(tokenizer, prompt_messages(row, system_prompt), True)) for row in rows]


class PromptSampler:
    """Epochs over a prompt set in a seeded random order. `state()` / `restore()` capture where it
    stands (the random generator and the rest of the current epoch): a resumed run draws the same
    prompts as an uninterrupted one."""

    def __init__(self, prompts: list[Prompt], seed: int = 0) -> None:
        if not prompts:
            raise ValueError("the prompt set is empty")
        self.prompts, self.rng, self.order = prompts, random.Random(seed), []

    def next(self, n: int) -> list[Prompt]:
        out = []
        while len(out) < n:
            if not self.order:
                self.order = list(range(len(self.prompts)))
                self.rng.shuffle(self.order)
            out.append(self.prompts[self.order.pop()])
        return out

    def state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss], "order": list(self.order), "size": len(self.prompts)}

    def restore(self, state: dict) -> None:
        if state["size"] != len(self.prompts):
            raise ValueError(f"the sampler state is for {state['size']} prompts, this prompt set has {len(self.prompts)}")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.order = list(state["order"])
