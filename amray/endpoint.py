"""An OpenAI-compatible client for served models: the chat reward's judge, the ground-truth check's
second judge, the LLM query filter and the Arena-Hard judge all call one through this.

    client = EndpointClient(EndpointConfig(endpoint="http://localhost:8000/v1"), "reward.chat")
    reply = client.chat([{"role": "user", "content": "..."}])      # Reply(text, finish_reason, ...)
    results = client.map(judge_one, rows)                         # `concurrency` requests at a time

AM-Thinking-v1 runs its LLM judge and o4-mini as external APIs; any server speaking the OpenAI chat
completions protocol works (`vllm serve`, SGLang, OpenAI). Every failure is an `EndpointError` that
names the endpoint, the model and what went wrong; callers turn it into a row-level error (a 0
reward with the reason, a kept row marked unchecked), never a crash or a hang:
- each request is bounded by `timeout_s` (connect, and each wait on the server's reply);
- connection errors, timeouts, 408/409/429 and 5xx are retried `retries` times, waiting `backoff_s`,
  then twice that, ... (with jitter; a Retry-After header is honoured up to 60 s);
- other 4xx answers and bodies that are not a chat completion fail at once: the request or the
  server is wrong, and asking again would not change it;
- a caller's `deadline` (a reward row's bound) caps every attempt and wait.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from amray.configtree import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

_RETRY_STATUS = {408, 409, 429}
_MAX_RETRY_AFTER_S = 60.0
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class EndpointConfig:
    """Where a served model is and how to call it (one section per use, e.g. `ground_truth.judge`)."""

    endpoint: str = ""
    """Base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1 (`vllm serve`) or
    https://api.openai.com/v1. Empty: the feature that uses it is off."""
    model: str = ""
    """Model name sent with each request; empty: the server's only model (asked once, GET /models)."""
    api_key_env: str = ""
    """Name of the environment variable holding the API key (e.g. OPENAI_API_KEY), sent as a
    Bearer token; empty: no key (a local `vllm serve`). The key itself never goes in a config."""
    timeout_s: PositiveFloat = 120.0
    """Bound on one request: connecting, and each wait for the server's reply."""
    retries: NonNegativeInt = 2
    """Further attempts after a timeout, connection error, 408/409/429 or 5xx."""
    backoff_s: NonNegativeFloat = 1.0
    """Wait before the first retry; doubled before each next one (with jitter)."""
    concurrency: PositiveInt = 8
    """Requests in flight at once from one process (one worker)."""
    max_tokens: PositiveInt = 4096
    """Tokens the model may write per answer (a reasoning judge needs room to think)."""
    temperature: NonNegativeFloat = 0.0
    """Sampling temperature of the answers (0: the judge's most likely verdict)."""
    extra_body: dict = field(default_factory=dict)
    """Extra request fields sent as they are, e.g. {reasoning_effort: high} (o4-mini),
    {chat_template_kwargs: {enable_thinking: false}} or vLLM's {structured_outputs: {regex: ...}};
    a field given here replaces the one amray would send (e.g. `response_format`)."""

    def validate(self) -> list[tuple[str, str]]:
        if not isinstance(self.extra_body, dict):
            return [("extra_body", f"expected a mapping of request fields, got {self.extra_body!r}")]
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            return [("endpoint", f"{self.endpoint!r} is not an http(s) URL, e.g. http://localhost:8000/v1")]
        return []


class EndpointError(RuntimeError):
    """A request that failed for good: after its retries, or at once when retrying cannot help."""


@dataclass
class Reply:
    text: str
    """The answer (`choices[0].message.content`; "" when the server sent none)."""
    finish_reason: str | None
    """`stop`, or `length` when the answer was cut at max_tokens."""
    reasoning: str = ""
    """Thinking the server returned apart from the answer (vLLM's reasoning parsers), if any."""
    attempts: int = 1
    seconds: float = 0.0


class EndpointClient:
    """Chat completions against one endpoint and model; thread-safe, at most `concurrency` requests
    in flight from this process. `key` is the config section named in errors (`reward.chat`), and
    `model_field` the name its model key has there."""

    def __init__(self, cfg: EndpointConfig, key: str, model_field: str = "model") -> None:
        import httpx

        if not cfg.endpoint:
            raise EndpointError(f"{key}.endpoint is empty: give the base URL of an OpenAI-compatible API, "
                                "e.g. http://localhost:8000/v1")
        self.cfg, self.key, self.model_key = cfg, key, f"{key}.{model_field}"
        self.url = cfg.endpoint.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env, "")
            if not api_key:
                raise EndpointError(f"{key}.api_key_env names ${cfg.api_key_env}, which is not set in this "
                                    "process's environment (on a Ray cluster, pass it in the job's runtime_env)")
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(cfg.timeout_s),
                                  limits=httpx.Limits(max_connections=cfg.concurrency))
        self._slots = threading.BoundedSemaphore(cfg.concurrency)
        self._model = cfg.model
        self._model_lock = threading.Lock()

    @property
    def name(self) -> str:
        """`model @ endpoint`, for reports and row info."""
        return f"{self._model or '?'} @ {self.url}"

    def model(self, deadline: float | None = None) -> str:
        """The configured model, or the server's only one (asked once)."""
        with self._model_lock:
            if not self._model:
                body, _ = self._request("GET", "/models", None, deadline)
                ids = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)] if isinstance(body, dict) else []
                if len(ids) != 1 or not isinstance(ids[0], str):
                    raise EndpointError(f"{self.url} serves {len(ids)} models ({', '.join(map(str, ids[:5]))}): "
                                        f"set {self.model_key}" if ids else
                                        f"{self.url}/models lists no model: set {self.model_key}")
                self._model = ids[0]
            return self._model

    def chat(self, messages: list[dict], max_tokens: int | None = None, response_format: dict | None = None,
             deadline: float | None = None) -> Reply:
        """One chat completion (temperature and extra fields from the config); EndpointError on failure.
        `deadline` (a time.monotonic() value): no attempt or wait runs past it (a reward row's bound)."""
        body: dict = {"model": self.model(deadline), "messages": messages,
                      "max_tokens": self.cfg.max_tokens if max_tokens is None else max_tokens,
                      "temperature": self.cfg.temperature}
        if response_format is not None:
            body["response_format"] = response_format
        body.update(self.cfg.extra_body)
        start = time.monotonic()
        data, attempts = self._request("POST", "/chat/completions", body, deadline)
        try:
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EndpointError(f"{self._where('/chat/completions')}: the reply is not a chat completion "
                                f"(no choices[0].message): {json.dumps(data)[:300]}") from None
        if not isinstance(text, str):
            raise EndpointError(f"{self._where('/chat/completions')}: choices[0].message.content is "
                                f"{type(text).__name__}, not text")
        return Reply(text, choice.get("finish_reason"), reasoning if isinstance(reasoning, str) else "",
                     attempts, round(time.monotonic() - start, 3))

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`fn` over `items` on `concurrency` threads, results in input order (`fn` handles its own
        EndpointErrors: one row's failure must not stop the others)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EndpointClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict | None, deadline: float | None = None) -> tuple[object, int]:
        """(JSON of a successful answer, attempts), retrying what may pass, never past `deadline`."""
        import httpx

        problem, attempts = "", 0
        for attempt in range(self.cfg.retries + 1):
            timeout = self.cfg.timeout_s if deadline is None else min(self.cfg.timeout_s, deadline - time.monotonic())
            if timeout <= 0:
                problem += " (then the row's time ran out)" if problem else "the row's time ran out before a request"
                break
            attempts += 1
            wait = self.cfg.backoff_s * 2 ** attempt * random.uniform(0.5, 1.0)
            try:
                with self._slots:
                    response = self._http.request(method, self.url + path, json=body, timeout=timeout)
            except httpx.TimeoutException:
                problem = f"no answer within {timeout:.3g}s (timeout_s={self.cfg.timeout_s:g})"
            except httpx.HTTPError as e:  # refused, reset, DNS, protocol
                problem = f"connection failed: {type(e).__name__}: {e}"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return response.json(), attempts
                    except ValueError:
                        raise EndpointError(f"{self._where(path)} answered 200 with a body that is not JSON: "
                                            f"{response.text[:200]!r}") from None
                problem = f"HTTP {status}: {response.text[:300]}"
                if status not in _RETRY_STATUS and status < 500:
                    raise EndpointError(f"{self._where(path)} refused the request ({problem})")
                wait = max(wait, _retry_after(response))
            if attempt < self.cfg.retries:
                if deadline is not None and time.monotonic() + wait >= deadline:
                    problem += " (no time left for a retry)"
                    break
                time.sleep(wait)
        raise EndpointError(f"{self._where(path)} failed after {attempts} attempt{'s' * (attempts != 1)}: {problem}")

    def _where(self, path: str) -> str:
        return f"{self.key}: {self.url}{path}" + (f" (model {self._model})" if self._model else "")


def _retry_after(response) -> float:
    try:
        return min(_MAX_RETRY_AFTER_S, max(0.0, float(response.headers.get("retry-after", 0))))
    except ValueError:  # an HTTP date: not worth parsing for a wait this short
        return 0.0


def parse_json_object(text: str, keys: tuple[str, ...]) -> dict | None:
    """The last JSON object in `text` holding all `keys` (a judge may think before it answers, or
    wrap the object in a ```json fence); None when there is none."""
    decoder = json.JSONDecoder()
    found = None
    start = text.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict) and all(k in obj for k in keys):
            found = obj
        start = text.find("{", end)
    return found
