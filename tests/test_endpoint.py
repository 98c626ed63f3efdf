"""The OpenAI-compatible client against a fake server that misbehaves on purpose: the key from the
named environment variable, the served model found, retries with backoff on what may pass, clear
errors (and no retry) on what will not, a bounded time for a hung server, a concurrency cap."""

from __future__ import annotations

import time

import pytest

from amray.endpoint import EndpointClient, EndpointConfig, EndpointError, parse_json_object
from endpoint_fakes import FakeOpenAI

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(["scripted"]) as server:
        yield server


def client(fake: FakeOpenAI, model: str, **settings: object) -> EndpointClient:
    cfg = EndpointConfig(endpoint=fake.url, model=model, backoff_s=0.01, **settings)
    return EndpointClient(cfg, "test.judge")


def test_chat_sends_model_key_and_fields_and_finds_the_served_model(fake, monkeypatch) -> None:
    monkeypatch.setenv("AMRAY_TEST_KEY", "sk-test-123")
    fake.script = lambda messages: "answer to " + messages[-1]["content"]
    cfg = EndpointConfig(endpoint=fake.url + "/", api_key_env="AMRAY_TEST_KEY", max_tokens=77,
                         extra_body={"reasoning_effort": "high"})
    with EndpointClient(cfg, "test.judge") as c:
        reply = c.chat(MESSAGES, response_format={"type": "json_object"})
        assert c.model() == "scripted"  # the server's only model, asked once (GET /models)
    assert (reply.text, reply.finish_reason, reply.attempts) == ("answer to hello", "stop", 1)
    sent = fake.requests[-1]
    assert sent["headers"]["Authorization"] == "Bearer sk-test-123"
    assert sent["body"] == {"model": "scripted", "messages": MESSAGES, "max_tokens": 77, "temperature": 0.0,
                            "response_format": {"type": "json_object"}, "reasoning_effort": "high"}


def test_missing_key_and_ambiguous_model_are_named(monkeypatch) -> None:
    monkeypatch.delenv("AMRAY_TEST_KEY", raising=False)
    with pytest.raises(EndpointError, match=r"test.judge.api_key_env names \$AMRAY_TEST_KEY, which is not set"):
        EndpointClient(EndpointConfig(endpoint="http://127.0.0.1:9/v1", api_key_env="AMRAY_TEST_KEY"), "test.judge")
    with FakeOpenAI(["judge-a", "judge-b"]) as two:
        c = EndpointClient(EndpointConfig(endpoint=two.url), "reward.chat", model_field="endpoint_model")
        with pytest.raises(EndpointError, match=r"serves 2 models \(judge-a, judge-b\): set reward.chat.endpoint_model"):
            c.chat(MESSAGES)


def test_server_errors_are_retried_with_backoff_then_pass(fake) -> None:
    fake.script = lambda messages: "fine now"
    fake.flaky_failures = 2
    reply = client(fake, "flaky", retries=2).chat(MESSAGES)
    assert (reply.text, reply.attempts) == ("fine now", 3)
    assert len(fake.chats("flaky")) == 3
    assert client(fake, "ratelimited", retries=1).chat(MESSAGES).attempts == 2  # 429: wait, ask again


def test_what_a_retry_cannot_fix_fails_at_once_with_the_reason(fake) -> None:
    with pytest.raises(EndpointError, match=r"refused the request \(HTTP 400: .*max_tokens is too large"):
        client(fake, "badrequest", retries=3).chat(MESSAGES)
    assert len(fake.chats("badrequest")) == 1
    with pytest.raises(EndpointError, match=r"answered 200 with a body that is not JSON: '<html>Bad Gateway"):
        client(fake, "garbage", retries=3).chat(MESSAGES)
    with pytest.raises(EndpointError, match=r"the reply is not a chat completion \(no choices\[0\].message\)"):
        client(fake, "nochoices").chat(MESSAGES)
    with pytest.raises(EndpointError, match=r"failed after 2 attempts: HTTP 500: .*the judge crashed"):
        client(fake, "error500", retries=1).chat(MESSAGES)
    with pytest.raises(EndpointError, match=r"127.0.0.1:9/v1/chat/completions .*failed after 1 attempt: connection failed"):
        EndpointClient(EndpointConfig(endpoint="http://127.0.0.1:9/v1", model="m", retries=0), "test.judge").chat(MESSAGES)


def test_a_hung_server_costs_timeout_per_attempt_and_a_deadline_caps_the_whole(fake) -> None:
    fake.slow_s = 60.0
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"failed after 2 attempts: no answer within 0.3s"):
        client(fake, "slow", timeout_s=0.3, retries=1).chat(MESSAGES)
    assert time.monotonic() - start < 30  # bounded (0.6 s of timeouts), not the server's 60 s
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"no answer within"):
        client(fake, "slow", timeout_s=20, retries=5).chat(MESSAGES, deadline=time.monotonic() + 0.5)
    assert time.monotonic() - start < 15  # the row's deadline, not 6 x 20 s


def test_concurrency_is_capped_per_client(fake) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fake.script = lambda messages: messages[-1]["content"]
    fake.hold_s, fake.max_in_flight["scripted"] = 0.2, 0
    try:
        c = client(fake, "scripted", concurrency=2)
        with ThreadPoolExecutor(6) as callers:  # six threads share the client: two requests at a time
            texts = list(callers.map(lambda i: c.chat([{"role": "user", "content": str(i)}]).text, range(6)))
        assert fake.max_in_flight["scripted"] == 2
        assert c.map(lambda i: c.chat([{"role": "user", "content": str(i)}]).text, range(5)) == [str(i) for i in range(5)]
    finally:
        fake.hold_s = 0.0
    assert texts == [str(i) for i in range(6)]


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1, "b": 2}', {"a": 1, "b": 2}),
    ('I think... ```json\n{"a": 1}\n``` no wait: {"a": 3, "b": 4} final', {"a": 3, "b": 4}),
    ('{"a": {"b": 1}}', None), ("no json {here", None)])
def test_parse_json_object_takes_the_last_object_with_the_keys(text: str, expected: dict | None) -> None:
    assert parse_json_object(text, ("a", "b")) == expected
