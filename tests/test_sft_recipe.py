"""The paper's SFT recipe: the assistant mask (every assistant turn, or the final one only), rows
cut at sft.max_length and counted, the global batch measured in tokens, warmup as a fraction of
the steps, configs/am_thinking_32b_sft.yaml, and jobs/sft.py end to end on the tiny model with
real FSDP2 learners. (Packing rows into micro-batches is the learner's: tested with it.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from amray.config import ConfigError, SFTConfig, load_config
from amray.models import build_tiny_model
from amray.sft import assistant_mask, sft_plan, sft_rows, token_batches, warmup_steps

ROOT = Path(__file__).resolve().parents[1]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "It is 5."},
    {"role": "user", "content": "And 5 * 7?"},
    {"role": "assistant", "content": "<think>5 * 7 = 35</think>The answer is 35."},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("sft") / "tiny"))


def trained_spans(tokenizer, ids: list[int], mask: np.ndarray) -> list[str]:
    """The text of each run of consecutive loss-mask tokens."""
    spans, current = [], []
    for token, on in zip(ids, mask):
        if on:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    return spans + ([tokenizer.decode(current)] if current else [])


def test_mask_covers_every_assistant_turn_through_its_end_marker(tokenizer) -> None:
    ids, mask = assistant_mask(tokenizer, CONVERSATION)
    assert trained_spans(tokenizer, ids, mask) == ["It is 5.<|im_end|>\n",
                                                   "<think>5 * 7 = 35</think>The answer is 35.<|im_end|>\n"]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_final_turn_only_masks_the_last_assistant_turn(tokenizer) -> None:
    ids, mask = assistant_mask(tokenizer, CONVERSATION, final_turn_only=True)
    assert trained_spans(tokenizer, ids, mask) == ["<think>5 * 7 = 35</think>The answer is 35.<|im_end|>\n"]
    assert ids == assistant_mask(tokenizer, CONVERSATION)[0]  # the same tokens: earlier turns are context


def test_a_template_that_rewrites_earlier_turns_is_refused_not_mismasked(tokenizer) -> None:
    # like templates that drop the thinking of earlier turns: the prefix renders differently
    rewriting = tokenizer.chat_template.replace(
        "message['content']", "(message['content'] if loop.last or message['role'] != 'assistant' else 'earlier')")
    original, tokenizer.chat_template = tokenizer.chat_template, rewriting
    try:
        with pytest.raises(ValueError, match="assistant turn 2: the chat template renders the conversation up to "
                                             "this turn differently"):
            assistant_mask(tokenizer, CONVERSATION)
        ids, mask = assistant_mask(tokenizer, CONVERSATION, final_turn_only=True)  # the final turn is fine
        assert trained_spans(tokenizer, ids, mask)[0].startswith("<think>5 * 7")
    finally:
        tokenizer.chat_template = original


def test_rows_are_cut_at_max_length_and_counted(tokenizer) -> None:
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    full = len(assistant_mask(tokenizer, CONVERSATION)[0])
    final_start = int(np.flatnonzero(assistant_mask(tokenizer, CONVERSATION, True)[1])[0])
    rows = sft_rows(tokenizer, [CONVERSATION, short], final_turn_only=True, max_length=full - 3)
    assert (rows.truncated, rows.dropped, len(rows.batch)) == (1, 0, 2)
    assert len(rows.batch.tokens[0]) == full - 3 and rows.batch.loss_mask[0][-1] == 1.0  # the cut keeps the start
    # cut before the final turn begins: nothing left to train on, the row is left out and counted
    rows = sft_rows(tokenizer, [CONVERSATION, short], final_turn_only=True, max_length=final_start)
    assert (rows.truncated, rows.dropped, len(rows.batch)) == (1, 1, 1)
    assert rows.report()["dropped_without_loss_tokens"] == 1 and rows.report()["rows"] == 1
    # every turn: the first answer still trains, so the row stays
    assert sft_rows(tokenizer, [CONVERSATION], max_length=final_start).dropped == 0


def test_token_batches_hold_each_row_once_and_about_the_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 400, size=200).tolist() + [1500]  # one row longer than a batch
    order = rng.permutation(len(lengths))
    batches = token_batches(lengths, order, 1000)
    assert [i for b in batches for i in b] == order.tolist()  # every row once, in the shuffled order
    sizes = [sum(lengths[i] for i in b) for b in batches]
    for b, size, nxt in zip(batches, sizes, batches[1:] + [None]):
        assert size <= 1000 or len(b) == 1  # only a row longer than the budget exceeds it, alone
        if nxt is not None:
            assert size + lengths[nxt[0]] > 1000  # a batch closes only when the next row would overflow it
    assert sum(sizes) / len(sizes) > 800  # "about" the budget: close to it on average


def test_plan_by_tokens_or_rows_and_warmup_as_a_fraction() -> None:
    lengths = [100] * 50
    by_tokens = sft_plan(SFTConfig(epochs=2, batch_tokens=1000), lengths, seed=0)
    assert len(by_tokens) == 10 and all(len(idx) == 10 for _, idx in by_tokens)
    assert [e for e, _ in by_tokens] == [0] * 5 + [1] * 5
    first, second = ([i for e, idx in by_tokens if e == epoch for i in idx] for epoch in (0, 1))
    assert sorted(first) == sorted(second) == list(range(50)) and first != second  # each epoch reshuffled
    by_rows = sft_plan(SFTConfig(epochs=2, batch_size=16), lengths, seed=0)  # batch_tokens 0: rows, as before
    assert len(by_rows) == 6 and all(len(idx) == 16 for _, idx in by_rows)
    assert warmup_steps(SFTConfig(warmup_ratio=0.05), 400) == 20 and warmup_steps(SFTConfig(warmup_ratio=0.05), 3) == 1
    assert warmup_steps(SFTConfig(warmup_steps=7), 400) == 7
    with pytest.raises(ConfigError, match="sft.warmup_ratio: 0.05 and sft.warmup_steps=3 are both set"):
        load_config(None, ["sft.warmup_ratio=0.05", "sft.warmup_steps=3"])


def test_paper_config_is_the_recipe() -> None:
    cfg = load_config(ROOT / "configs" / "am_thinking_32b_sft.yaml")
    s = cfg.sft
    assert (s.lr, s.epochs, s.warmup_ratio, s.max_length, s.final_turn_only) == (8e-5, 2, 0.05, 32768, True)
    assert 1.9e6 <= s.batch_tokens <= 2.2e6
    assert cfg.trainer.micro_batch_tokens == s.max_length  # the learner packs up to one full-length row


def test_sft_job_final_turn_token_batches_end_to_end(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from jobs.sft import main

    chats = [[{"role": "user", "content": f"What is {a} + {b}?"}, {"role": "assistant", "content": f"{a + b - 1}?"},
              {"role": "user", "content": "Are you sure?"}, {"role": "assistant", "content": f"Sorry: {a + b}."}]
             for a in range(6) for b in range(4)]
    chats.append([{"role": "user", "content": "Tell me a long story. " * 20}, {"role": "assistant", "content": "No."}])
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in chats))
    out = tmp_path / "run"
    summary = main(["--output-dir", str(out), f"data.sft={data}", "model.path=tiny", f"model.cache_dir={tmp_path}",
                    "sft.final_turn_only=true", "sft.max_length=96", "sft.batch_tokens=400", "sft.epochs=2",
                    "sft.warmup_ratio=0.25", "sft.lr=1e-3", "trainer.num_workers=2", "log.progress=false"])
    assert summary == json.loads((out / "summary.json").read_text())
    # the long story is cut at 96 tokens before its answer: counted, and left out
    assert (summary["conversations"], summary["truncated"], summary["dropped_without_loss_tokens"]) == (25, 1, 1)
    assert summary["rows"] == 24 and summary["max_step_tokens"] <= 400
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == summary["steps"] > 4 and all(m["sft/tokens"] <= 400 for m in metrics)
    assert summary["warmup_steps"] == round(0.25 * summary["steps"])
    assert metrics[0]["sft/lr"] == pytest.approx(1e-3 / summary["warmup_steps"])  # linear warmup from lr / warmup
    assert summary["final_loss"] < summary["first_loss"]
    assert (out / "model" / "model.safetensors").is_file()
