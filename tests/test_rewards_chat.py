"""Chat reward with tiny reward/judge models built locally (random weights, a trained tokenizer)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from amray.rewards import RewardConfig, score_row
from amray.rewards.chat import parse_judge_score
from amray.rewards.config import ChatRewardConfig

LABELS = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]  # HelpSteer2 heads
TEXT = ["the capital of france is paris", "user assistant hello how are you today",
        "i do not know", "score 1 2 3 4 5 6 7 8 9 10 question answer judge rate"]


def _tiny_tokenizer(path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXT, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    fast.save_pretrained(path)
    return fast


def _tiny_config(vocab_size: int, **extra: object):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=1,
                       eos_token_id=2, bos_token_id=2, **extra)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> Path:
    from transformers import LlamaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny_rm")
    tokenizer = _tiny_tokenizer(path)
    torch.manual_seed(0)
    config = _tiny_config(len(tokenizer), num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                          label2id={name: i for i, name in enumerate(LABELS)})
    LlamaForSequenceClassification(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory) -> Path:
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny_judge")
    tokenizer = _tiny_tokenizer(path)
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_config(len(tokenizer))).save_pretrained(path)
    return path


def chat_row(response: str) -> dict:
    return {"id": "c", "source": "chat", "prompt": "what is the capital of france", "response": response}


def test_reward_model_averages_the_three_named_heads(reward_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    chat = ChatRewardConfig(model_path=str(reward_model_dir), score_min=-1.0, score_max=1.0)
    config = RewardConfig(chat=chat, timeout_s=60)
    result = score_row(chat_row("the capital of france is paris"), config)
    assert "error" not in result.info, result.info
    assert result.info["heads"] == ["helpfulness", "correctness", "coherence"]
    # the same number straight from the model: mean of heads 0-2, mapped from [-1, 1] to [0, 1]
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
    text = "User: what is the capital of france\nAssistant: the capital of france is paris"
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
    raw = float(logits[:3].mean())
    assert math.isclose(result.info["raw_score"], raw, rel_tol=1e-4, abs_tol=1e-5)
    assert math.isclose(result.reward, min(1.0, max(0.0, (raw + 1) / 2)), rel_tol=1e-4, abs_tol=1e-5)
    other = score_row(chat_row("i do not know"), config)
    assert other.info["raw_score"] != result.info["raw_score"]
    assert 0.0 <= other.reward <= 1.0


def test_reward_model_scores_only_the_final_answer(reward_model_dir: Path) -> None:
    config = RewardConfig(chat=ChatRewardConfig(model_path=str(reward_model_dir)), timeout_s=60)
    plain = score_row(chat_row("the capital of france is paris"), config)
    thought = score_row(chat_row("<think>hello how are you</think><answer>the capital of france is paris</answer>"), config)
    assert thought.info["raw_score"] == pytest.approx(plain.info["raw_score"], abs=1e-5)


def test_judge_mode_runs_a_local_causal_lm(judge_dir: Path) -> None:
    config = RewardConfig(chat=ChatRewardConfig(mode="judge", model_path=str(judge_dir), judge_max_tokens=8), timeout_s=60)
    result = score_row(chat_row("the capital of france is paris"), config)
    assert "error" not in result.info, result.info
    assert "judge_output" in result.info  # a random tiny judge writes noise: scored 0 unless it wrote a number
    expected = 0.0 if result.info["judge_score"] is None else (result.info["judge_score"] - 1) / 9
    assert result.reward == expected


@pytest.mark.parametrize("text, score", [("Score: 7", 7), ("I'd give it 9/10.", 9), ("score=10", 10), ("no idea", None)])
def test_parse_judge_score(text: str, score: int | None) -> None:
    assert parse_judge_score(text) == score


def test_missing_model_is_an_error_not_a_crash() -> None:
    result = score_row(chat_row("hi"), RewardConfig(chat=ChatRewardConfig(model_path=""), timeout_s=60))
    assert result.reward == 0.0 and "reward.chat.model_path is empty" in result.info["error"]


# --- the served judge (reward.chat.endpoint), against a fake OpenAI-compatible server ---------

@pytest.fixture(scope="module")
def judge_server():
    from endpoint_fakes import FakeOpenAI

    with FakeOpenAI(["scripted", "slow", "error500", "garbage"]) as fake:
        yield fake


def served(fake, model: str = "scripted", timeout_s: float = 30, **chat: object) -> RewardConfig:
    return RewardConfig(chat=ChatRewardConfig(endpoint=fake.url, endpoint_model=model, **chat), timeout_s=timeout_s)


def test_served_judge_reward_is_the_mean_of_the_three_scores(judge_server) -> None:
    import json

    def judge(messages: list[dict]) -> str:  # a judge that likes the right capital
        good = "paris" in messages[-1]["content"].split("[Answer]")[1]
        return json.dumps({"helpfulness": 4, "correctness": 4, "coherence": 3} if good else
                          {"helpfulness": 1, "correctness": 0, "coherence": 2})

    judge_server.script = judge
    right = score_row(chat_row("<think>hmm, lyon?</think>the capital of france is paris"), served(judge_server))
    wrong = score_row(chat_row("the capital of france is lyon"), served(judge_server))
    assert "error" not in right.info, right.info
    assert right.info["judge_scores"] == {"helpfulness": 4.0, "correctness": 4.0, "coherence": 3.0}
    assert math.isclose(right.reward, (11 / 3) / 4) and math.isclose(wrong.reward, 1 / 4)
    assert right.info["judge"] == f"scripted @ {judge_server.url}"
    body = judge_server.chats("scripted")[-2]["body"]
    question = body["messages"][0]["content"]
    assert "what is the capital of france" in question and "lyon?" not in question  # the answer, not the thinking
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["helpfulness", "correctness", "coherence"]
    assert schema["properties"]["coherence"] == {"type": "number", "minimum": 0.0, "maximum": 4.0}


@pytest.mark.parametrize("answer, problem", [
    ("The answer is good. Score: 9/10", "no JSON object with helpfulness, correctness, coherence"),
    ('{"helpfulness": 3, "correctness": 7, "coherence": 2}', "correctness=7 is outside the scale 0..4"),
    ('{"helpfulness": "great", "correctness": 1, "coherence": 2}', "helpfulness is 'great', not a number"),
])
def test_served_judge_unparseable_answer_scores_zero_with_the_reason(judge_server, answer: str, problem: str) -> None:
    judge_server.script = lambda messages: answer
    result = score_row(chat_row("the capital of france is paris"), served(judge_server))
    assert result.reward == 0.0 and problem in result.info["error"], result.info
    assert result.info["judge_output"] == answer


@pytest.mark.parametrize("model, problem", [
    ("error500", "failed after 2 attempts: HTTP 500"),
    ("garbage", "answered 200 with a body that is not JSON"),
    ("slow", "no answer within"),
])
def test_served_judge_failures_score_zero_within_the_row_bound(judge_server, model: str, problem: str) -> None:
    import time

    start = time.monotonic()
    result = score_row(chat_row("the capital of france is paris"), served(judge_server, model, timeout_s=2, retries=1))
    assert result.reward == 0.0 and problem in result.info["error"], result.info
    assert result.info["error"].startswith("chat judge: reward.chat: ")
    assert time.monotonic() - start < 20  # the row's bound (2 s) holds: never the server's 30 s
