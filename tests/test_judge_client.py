"""interp/llm_client.py against the loopback OpenAI-compatible server: cache, retries, timeouts, give-up,
bounded concurrency, the API key kept out of everything written."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

import pytest

from fastsae.interp.llm_client import EndpointError, LLMClient, LLMClientError
from tests._openai_server import OpenAIServer, Reply, refuse


def msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def echo(request) -> str:
    return f"echo: {request.last_user}"


@pytest.fixture
def server():
    with OpenAIServer(respond=echo) as s:
        yield s


def client(server, tmp_path, **kw) -> LLMClient:
    kw.setdefault("cache_dir", tmp_path / "cache")
    kw.setdefault("timeout", 5.0)
    return LLMClient(server.url, "test-model", **kw)


def test_answers_in_order_and_a_rerun_asks_nothing(server, tmp_path):
    prompts = [msgs(f"p{i}") for i in range(5)]
    with client(server, tmp_path) as c:
        replies = c.ask_many(prompts)
    assert [r.text for r in replies] == [f"echo: p{i}" for i in range(5)]
    assert all(r.ok and not r.cached for r in replies) and server.count == 5
    assert server.requests[0].model == "test-model"
    with client(server, tmp_path) as c:  # a new process would find the same cache
        again = c.ask_many(prompts)
    assert [r.text for r in again] == [r.text for r in replies] and all(r.cached for r in again)
    assert server.count == 5
    # other sampling params are another question
    with client(server, tmp_path) as c:
        c.ask(prompts[0], temperature=0.7)
    assert server.count == 6


@pytest.mark.parametrize("first", [Reply.error(429, retry_after=0.01), Reply.error(500), Reply.error(503)])
def test_rate_limits_and_server_errors_are_retried(server, tmp_path, first):
    server.push(first)
    with client(server, tmp_path, max_retries=2) as c:
        r = c.ask(msgs("x"))
    assert r.ok and r.text == "echo: x" and server.count == 2


def test_a_slow_answer_past_the_timeout_is_retried(server, tmp_path):
    server.push(Reply.slow(2.0, "too late"))
    with client(server, tmp_path, timeout=0.3, max_retries=1) as c:
        r = c.ask(msgs("x"))
    assert r.text == "echo: x" and server.count == 2


def test_retries_are_bounded(tmp_path):
    with OpenAIServer(respond=lambda req: Reply.error(500, retry_after=0.01)) as s:
        with client(s, tmp_path, max_retries=2) as c:
            r = c.ask(msgs("x"))
        assert not r.ok and r.text is None and "request failed" in r.error and "500" in r.error
        assert s.count == 3  # the first try and two retries


def test_unparseable_answers_are_reasked_fresh_then_given_up(server, tmp_path):
    def parse(text):
        if not text.startswith("echo"):
            raise ValueError(f"not an echo: {text!r}")
        return text.upper()

    server.push(Reply("garbage"))
    with client(server, tmp_path) as c:
        r = c.ask_parsed(msgs("x"), parse, parse_retries=2)
        assert r.ok and r.value == "ECHO: X" and r.attempts == 2 and server.count == 2
        # the good answer replaced the garbage in the cache
        assert c.ask_parsed(msgs("x"), parse).cached and server.count == 2
    with OpenAIServer(respond=lambda req: "still garbage") as s:
        with client(s, tmp_path / "b") as c:
            r = c.ask_parsed(msgs("x"), parse, parse_retries=2)
        assert not r.ok and r.value is None and r.error.startswith("unparseable: not an echo")
        assert r.text == "still garbage" and s.count == 3


def test_a_refusing_endpoint_stops_after_max_failures(tmp_path):
    with OpenAIServer(respond=refuse) as s:
        c = client(s, tmp_path, max_failures=3, concurrency=1)
        replies = c.ask_many([msgs(f"p{i}") for i in range(10)])
        assert s.count == 3
    assert c.gave_up and "\n" not in c.gave_up and "failed 3 requests in a row" in c.gave_up
    assert "403" in c.gave_up
    assert all(r.error.startswith("request failed") for r in replies[:3])
    assert all(r.error.startswith("not asked") for r in replies[3:])
    with pytest.raises(EndpointError, match="failed 3 requests in a row"):
        c.raise_if_gave_up()


def test_a_success_resets_the_failure_count(server, tmp_path):
    server.push(Reply.error(403), Reply.error(403))
    with client(server, tmp_path, max_failures=3, concurrency=1) as c:
        replies = c.ask_many([msgs("a"), msgs("b"), msgs("c"), msgs("d"), msgs("e")])
        server.push(Reply.error(403), Reply.error(403))
        replies += c.ask_many([msgs("f"), msgs("g"), msgs("h")])
    assert [r.ok for r in replies] == [False, False, True, True, True, False, False, True]
    assert not c.gave_up


def test_concurrency_is_bounded(tmp_path):
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow(request):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return "ok"

    with OpenAIServer(respond=slow) as s:
        with client(s, tmp_path, concurrency=2) as c:
            assert all(r.ok for r in c.ask_many([msgs(f"p{i}") for i in range(6)]))
    assert state["peak"] == 2


def test_the_key_is_sent_but_never_written(tmp_path, monkeypatch, caplog):
    key = "sk-test-0123456789-secret"
    monkeypatch.setenv("JUDGE_TEST_KEY", key)

    def leaky(request):  # an error body echoing the credentials back, as some servers do
        return Reply.error(401, message=f"bad key {request.headers.get('authorization')}")

    caplog.set_level(logging.DEBUG)
    with OpenAIServer(respond=leaky) as s:
        with client(s, tmp_path, api_key_env="JUDGE_TEST_KEY", max_failures=2, concurrency=1) as c:
            replies = c.ask_many([msgs("a"), msgs("b")])
        assert s.requests[0].headers["authorization"] == f"Bearer {key}"
    assert c.gave_up and key not in c.gave_up and "***" in c.gave_up
    assert all(key not in r.error for r in replies)
    assert key not in caplog.text
    with OpenAIServer(respond=echo) as s:
        with client(s, tmp_path, api_key_env="JUDGE_TEST_KEY") as c:
            c.ask(msgs("a"))
    files = list((tmp_path / "cache").iterdir())
    assert files and all(key not in f.read_text() for f in files)
    assert json.loads(files[0].read_text())["text"] == "echo: a"


def test_keyless_local_servers_and_a_missing_package(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with client(server, tmp_path) as c:
        assert c.ask(msgs("x")).ok
    assert server.requests[0].headers["authorization"] == "Bearer no-key"
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(LLMClientError, match=r"pip install fastsae-instruct\[judge\]"):
        LLMClient(server.url, "m")
