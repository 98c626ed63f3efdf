"""Synthetic SFT responses: structure, truncation, n-gram loops, and perplexity under a real tiny LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amray.data.config import ResponseFilterConfig
from amray.data.perplexity import PerplexityScorer
from amray.data.responses import filter_responses, main, repetition_ratio
from amray.data.rows import DataError
from amray.models import build_tiny_model

GOOD = "<think>12 plus 34: 10 + 30 = 40 and 2 + 4 = 6, so 46.</think>The answer is \\boxed{46}."
LOOP = "<think>" + "Let me check that again, 12 plus 34 is 46. " * 12 + "</think>The answer is \\boxed{46}."


def sft_rows() -> list[dict]:
    """id = the rule expected to drop the row; keep-* rows survive."""
    ask = "What is 12 + 34?"
    return [
        {"id": "keep-math", "source": "math", "prompt": ask, "response": GOOD},
        {"id": "keep-messages", "source": "math", "messages": [{"role": "user", "content": ask},
                                                              {"role": "assistant", "content": GOOD}]},
        {"id": "keep-chat", "source": "chat", "prompt": "Say hi.", "response": "<think>Greet.</think>Hi!"},
        {"id": "truncated", "source": "math", "prompt": ask, "response": GOOD, "finish_reason": "length"},
        {"id": "truncated-think", "source": "math", "prompt": ask, "response": "<think>12 plus 34 is"},
        {"id": "truncated-code", "source": "code", "prompt": "Print 1.", "response": "<think>easy</think>```python\nprint(1"},
        {"id": "structure-no-think", "source": "math", "prompt": ask, "response": "The answer is \\boxed{46}."},
        {"id": "structure-empty-think", "source": "math", "prompt": ask, "response": "<think> </think>\\boxed{46}"},
        {"id": "structure-no-answer", "source": "math", "prompt": ask, "response": "<think>46</think>\n"},
        {"id": "structure-no-box", "source": "math", "prompt": ask, "response": "<think>46</think>It is 46."},
        {"id": "repetition", "source": "math", "prompt": ask, "response": LOOP},
    ]


def test_repetition_ratio_counts_repeated_ngrams() -> None:
    assert repetition_ratio("a b c d e f", 3) == 0.0
    assert repetition_ratio("a b a b a b", 2) == pytest.approx(3 / 5)  # (a b), (b a) seen, then 3 repeats
    assert repetition_ratio("too short", 10) == 0.0
    assert repetition_ratio(LOOP, 10) > 0.8


def test_each_rule_drops_its_row(tmp_path: Path) -> None:
    src = tmp_path / "sft.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in sft_rows()))
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    rep = main(["--input", str(src), "--output", str(out), "--report", str(tmp_path / "r.json"),
                "--rejects", str(rejects)])
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["keep-math", "keep-messages", "keep-chat"]
    dropped = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [r["id"] for r in dropped] == [r["id"] for r in sft_rows() if not r["id"].startswith("keep")]
    assert all(r["id"].startswith(r["reject_rule"]) for r in dropped), [(r["id"], r["reject_rule"]) for r in dropped]
    assert rep["rejected_by_rule"] == {"truncated": 3, "structure": 4, "repetition": 1}


def test_rows_without_a_response_are_named() -> None:
    with pytest.raises(DataError, match="row 2 of sft.jsonl: field `response` is missing"):
        filter_responses([{"id": 1, "prompt": "a", "response": GOOD}, {"id": 2, "prompt": "b"}],
                         ResponseFilterConfig(), "sft.jsonl")


@pytest.fixture(scope="module")
def fluent_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 trained briefly on GOOD: GOOD gets a low perplexity, other text stays high."""
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=128, layers=2, heads=2, kv_heads=1,
                            intermediate_size=256)  # head_dim 64
    scorer = PerplexityScorer(path)
    ids, _ = scorer.encode([{"role": "user", "content": "What is 12 + 34?"}], GOOD)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = torch.tensor([ids])
    for _ in range(30):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.save_pretrained(path)
    return path


def test_perplexity_separates_learned_from_unseen_text(fluent_model: Path) -> None:
    prompt = [{"role": "user", "content": "What is 12 + 34?"}]
    unseen = "<think>Multiply 7 by 8 to get 56, then halve it.</think>The answer is \\boxed{28}."
    learned, other = PerplexityScorer(fluent_model).score([prompt, prompt], [GOOD, unseen])
    assert learned < 10 < 500 < other  # a random model of this vocabulary sits near 500

    rows = [{"id": "learned", "source": "math", "prompt": prompt[0]["content"], "response": GOOD},
            {"id": "unseen", "source": "math", "prompt": prompt[0]["content"], "response": unseen}]
    cfg = ResponseFilterConfig(model=str(fluent_model), max_perplexity=50.0, batch_size=2)
    kept, rejected, seconds = filter_responses(rows, cfg)
    assert [r["id"] for r in kept] == ["learned"]
    assert rejected[0][0]["id"] == "unseen" and rejected[0][1] == "perplexity"
    assert "perplexity" in seconds
