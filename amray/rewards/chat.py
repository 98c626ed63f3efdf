"""Chat reward: a served LLM judge, a local reward model, or a local LLM judge.

- served judge (`reward.chat.endpoint` set): an OpenAI-compatible server (AM-Thinking calls its
  judge as an external API) is asked for one JSON object `{"helpfulness": s, "correctness": s,
  "coherence": s}` on the score_min..score_max scale; the reward is their mean mapped to [0, 1]
  like the reward model's. A judge that times out, fails or answers unparseably gives the row
  reward 0 with the reason in `info.error`. The row stays within reward.timeout_s.
- `reward_model`: a local `AutoModelForSequenceClassification` directory. AM-Thinking scores
  general chat by averaging the helpfulness, correctness and coherence heads of a HelpSteer-style
  reward model; heads are picked by name from `config.id2label` (all heads if none match), and the
  mean is mapped to [0, 1] with `score_min`/`score_max`.
- `judge`: a local causal LM that reads a rubric and answers "Score: N" (1-10); reward (N-1)/9.

A local model lives in this process's "chat" child (loaded once, outside any row's time budget),
so a row is still killed at `timeout_s` like every other source.
"""

from __future__ import annotations

import json
import re
import time

from amray.endpoint import EndpointClient, EndpointConfig, EndpointError, parse_json_object
from amray.rewards.config import ChatRewardConfig
from amray.rewards.isolation import WorkerError, WorkerTimeout, shared_worker
from amray.rewards.types import RewardResult

_MODULE = "amray.rewards.chat"
_LOAD_TIMEOUT_S = 900.0
DEFAULT_RUBRIC = (
    "You are a strict judge of assistant answers. Rate the answer below for helpfulness, correctness "
    "and coherence on a scale of 1 to 10.\n\n[Question]\n{prompt}\n\n[Answer]\n{response}\n\n"
    "Reply with one line of the form \"Score: N\".\nScore:"
)
CRITERIA = ("helpfulness", "correctness", "coherence")
"""What the served judge rates; the reward is their mean (AM-Thinking averages these three)."""
SERVED_RUBRIC = (
    "Please act as an impartial judge of the assistant's answer to the user's question below. Rate it "
    "on three criteria, each a number from {score_min:g} (worst) to {score_max:g} (best):\n"
    "- helpfulness: how well the answer meets the user's need;\n"
    "- correctness: whether everything it states is accurate;\n"
    "- coherence: whether it is clear, consistent and well organised.\n\n"
    "[Question]\n{prompt}\n\n[Answer]\n{response}\n\n"
    "Reply with only one JSON object: {{\"helpfulness\": s, \"correctness\": s, \"coherence\": s}}."
)
_SCORE = re.compile(r"(?:score\s*[:=]\s*)?\b(10|[1-9])(?:\s*/\s*10)?\b", re.IGNORECASE)

_loaded: dict = {}  # in the child: model, tokenizer, heads for the configured path


def load(config: ChatRewardConfig) -> dict:
    """Load the model named by the config (once); returns what was loaded, for `info`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    key = (config.mode, config.model_path, config.device)
    if _loaded.get("key") == key:
        return _loaded["summary"]
    if not config.model_path:
        raise ValueError("reward.chat.model_path is empty: point it at a local model directory")
    tokenizer = AutoTokenizer.from_pretrained(config.model_path, local_files_only=True)
    tokenizer.truncation_side = "left"  # keep the end of long responses
    torch.set_grad_enabled(False)
    if config.mode == "reward_model":
        model = AutoModelForSequenceClassification.from_pretrained(config.model_path, local_files_only=True)
        names = {str(v).lower(): int(k) for k, v in (model.config.id2label or {}).items()}
        heads = [names[label.lower()] for label in config.labels if label.lower() in names]
        heads = heads or list(range(model.config.num_labels))
        summary = {"heads": [model.config.id2label.get(h, str(h)) for h in heads]}
    elif config.mode == "judge":
        model = AutoModelForCausalLM.from_pretrained(config.model_path, local_files_only=True)
        heads, summary = [], {"judge": config.model_path}
    else:
        raise ValueError(f"reward.chat.mode must be `reward_model` or `judge`, got {config.mode!r}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(config.device).eval()
    _loaded.update(key=key, model=model, tokenizer=tokenizer, heads=heads, summary=summary)
    return summary


def rate(prompt: str, response: str, config: ChatRewardConfig) -> RewardResult:
    """Score one conversation with the loaded model (no time bound; see `score_chat`)."""
    summary = load(config)
    if config.mode == "reward_model":
        return _reward_model(prompt, response, config, summary)
    return _judge(prompt, response, config)


def _reward_model(prompt: str, response: str, config: ChatRewardConfig, summary: dict) -> RewardResult:
    model, tokenizer, heads = _loaded["model"], _loaded["tokenizer"], _loaded["heads"]
    text = conversation_text(tokenizer, prompt, response)
    batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=config.max_length).to(config.device)
    logits = model(**batch).logits[0].float()
    raw = float(logits[heads].mean())
    return RewardResult(_normalise(raw, config),
                        {"raw_score": raw, "head_scores": [float(logits[h]) for h in heads], **summary})


def _judge(prompt: str, response: str, config: ChatRewardConfig) -> RewardResult:
    model, tokenizer = _loaded["model"], _loaded["tokenizer"]
    question = (config.judge_rubric or DEFAULT_RUBRIC).format(prompt=prompt, response=response)
    text = conversation_text(tokenizer, question, None)
    batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=config.max_length).to(config.device)
    out = model.generate(**batch, max_new_tokens=config.judge_max_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    verdict = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    score = parse_judge_score(verdict)
    reward = 0.0 if score is None else (score - 1) / 9
    return RewardResult(reward, {"judge_score": score, "judge_output": verdict[-500:],
                                 "verdict": "scored" if score is not None else "no_score_in_judge_output"})


def parse_judge_score(text: str) -> int | None:
    """The first 1-10 score the judge wrote ("Score: 7", "7/10", or a bare "7")."""
    m = _SCORE.search(text)
    return int(m.group(1)) if m else None


def conversation_text(tokenizer: object, prompt: str, response: str | None) -> str:
    """The model's chat template where it has one, else a plain User/Assistant transcript."""
    messages = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=response is None)
    text = f"User: {prompt}\nAssistant:"
    return text if response is None else f"{text} {response}"


def score_chat(prompt: str, response: str, config: ChatRewardConfig, timeout_s: float = 10.0) -> RewardResult:
    """The served judge when an endpoint is set; else `rate` in this process's chat child (the
    model loads once per child, outside the row bound)."""
    start = time.monotonic()
    if config.endpoint:
        result = judge_served(prompt, response, config, deadline=start + timeout_s)
        result.info["elapsed_s"] = round(time.monotonic() - start, 4)
        return result
    worker = shared_worker("chat", preload=("torch", "transformers", _MODULE))
    try:
        worker.call(f"{_MODULE}:load", (config,), _LOAD_TIMEOUT_S)
        result = worker.call(f"{_MODULE}:rate", (prompt, response, config), timeout_s)
    except (WorkerTimeout, WorkerError) as e:
        result = RewardResult.failed(f"chat reward ({config.mode}, {config.model_path or 'no model'}): {e}")
    result.info["elapsed_s"] = round(time.monotonic() - start, 4)
    return result


_clients: dict[str, EndpointClient] = {}  # one per judge setting in this worker process


def judge_client(config: ChatRewardConfig) -> EndpointClient:
    """The worker's client for the configured judge (reused: connections stay open between rows)."""
    settings = EndpointConfig(endpoint=config.endpoint, model=config.endpoint_model, api_key_env=config.api_key_env,
                              timeout_s=config.timeout_s, retries=config.retries, concurrency=1,
                              max_tokens=config.judge_max_tokens, temperature=0.0, extra_body=config.extra_body)
    key = json.dumps(settings.__dict__, sort_keys=True, default=str)
    if key not in _clients:
        _clients[key] = EndpointClient(settings, "reward.chat", model_field="endpoint_model")
    return _clients[key]


def judge_served(prompt: str, response: str, config: ChatRewardConfig, deadline: float | None = None) -> RewardResult:
    """Ask the served judge for the three scores; reward = their mean mapped to [0, 1]."""
    question = (config.judge_rubric or SERVED_RUBRIC).format(
        prompt=prompt, response=response, score_min=config.score_min, score_max=config.score_max)
    try:
        client = judge_client(config)
        reply = client.chat([{"role": "user", "content": question}], response_format=_scores_schema(config),
                            deadline=deadline)
    except EndpointError as e:
        return RewardResult.failed(f"chat judge: {e}")
    info = {"judge": client.name, "judge_output": reply.text[-500:], "judge_attempts": reply.attempts}
    scores, problem = parse_judge_scores(reply.text, config.score_min, config.score_max)
    if problem:
        cut = (f" (the answer was cut at reward.chat.judge_max_tokens={config.judge_max_tokens})"
               if reply.finish_reason == "length" else "")
        return RewardResult.failed(f"chat judge {client.name}: {problem}{cut}", **info)
    raw = sum(scores.values()) / len(scores)
    return RewardResult(_normalise(raw, config), {**info, "judge_scores": scores, "raw_score": raw, "verdict": "scored"})


def parse_judge_scores(text: str, low: float, high: float) -> tuple[dict[str, float], str]:
    """The judge's {criterion: score} and "" , or {} and what is wrong with its answer."""
    obj = parse_json_object(text, CRITERIA)
    if obj is None:
        return {}, f"no JSON object with {', '.join(CRITERIA)} in the judge's answer {text[-200:]!r}"
    scores = {}
    for name in CRITERIA:
        value = obj[name]
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return {}, f"the judge's {name} is {value!r}, not a number"
        if not low <= value <= high:
            return {}, f"the judge's {name}={value:g} is outside the scale {low:g}..{high:g}"
        scores[name] = float(value)
    return scores, ""


def _scores_schema(config: ChatRewardConfig) -> dict:
    """The answer's JSON schema, sent as `response_format` (structured outputs: vLLM, SGLang, OpenAI)."""
    number = {"type": "number", "minimum": config.score_min, "maximum": config.score_max}
    return {"type": "json_schema", "json_schema": {"name": "chat_scores", "strict": True, "schema": {
        "type": "object", "properties": {name: number for name in CRITERIA}, "required": list(CRITERIA),
        "additionalProperties": False}}}


def _normalise(raw: float, config: ChatRewardConfig) -> float:
    span = config.score_max - config.score_min
    return min(1.0, max(0.0, (raw - config.score_min) / span)) if span > 0 else float(raw > config.score_min)
