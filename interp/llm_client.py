"""A small client for any OpenAI-compatible chat-completions endpoint, shared by `judge` and `steer --judge`.

    client = LLMClient("http://localhost:8000/v1", "gpt-4o-2024-11-20", cache_dir=out / "judge_cache")
    replies = client.ask_many([messages, ...], parse=my_parser)   # list[Reply], in order
    client.gave_up                                                # None, or the one line saying why it stopped

It speaks through the `openai` package (the `judge` extra): the openai client's own timeout and bounded
retries with backoff (429, 408/409, 5xx, connection errors and timeouts; it honours Retry-After). Around
it: bounded concurrency, an on-disk answer cache keyed by (model, messages, sampling params) so that a rerun
or a resume after a kill asks nothing twice, re-asking (cache bypassed) when `parse` refuses an answer, and a
give-up rule: after `max_failures` requests in a row fail, nothing more is asked. The API key is read from an
environment variable and never written anywhere: error texts are scrubbed of it before they are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsae.atomic import write_json_atomic
from fastsae.errors import ResourceError, UsageError

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
KEYLESS = "no-key"  # what a keyless local server (vLLM, llama.cpp, Ollama) is sent when the variable is unset
DEFAULT_PARAMS = {"temperature": 0.0}


class LLMClientError(UsageError):
    """The client cannot be set up as asked (missing package, bad setting)."""


class EndpointError(ResourceError):
    """The endpoint failed too many requests in a row; what was answered before is kept by the caller."""


@dataclass(frozen=True)
class Reply:
    """One prompt's outcome. `text` is the raw answer (None when no answer came); `value` is what `parse`
    made of it (None when there was no parser, no answer, or the parser refused every attempt); `error`
    says why there is no value (a failed request, an unparseable answer, or not asked after giving up)."""

    text: str | None
    value: Any = None
    error: str | None = None
    cached: bool = False
    attempts: int = 0  # answers requested from the endpoint for this prompt (0: all from the cache)

    @property
    def ok(self) -> bool:
        return self.error is None


def _openai():
    try:
        import openai
    except ImportError:
        raise LLMClientError(
            "the judge needs the openai package: pip install fastsae-instruct[judge]"
        ) from None
    return openai


class LLMClient:
    """Thread-safe; `ask`, `ask_parsed` and `ask_many` never raise for what the endpoint does."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        cache_dir: str | os.PathLike | None = None,
        max_failures: int = 8,
        params: dict | None = None,
    ):
        if concurrency < 1 or max_failures < 1 or max_retries < 0 or not timeout > 0:
            raise LLMClientError(
                f"LLMClient: concurrency ({concurrency}) and max_failures ({max_failures}) must be >= 1, "
                f"max_retries ({max_retries}) >= 0, timeout ({timeout}) > 0"
            )
        if not str(endpoint).startswith(("http://", "https://")):
            raise LLMClientError(f"endpoint {endpoint!r}: expected an http:// or https:// URL")
        openai = _openai()
        self.endpoint, self.model = endpoint, model
        self.concurrency, self.max_failures = concurrency, max_failures
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self._key = os.environ.get(api_key_env) or None
        self._api_errors = (openai.APIError,)
        self._client = openai.OpenAI(
            base_url=endpoint, api_key=self._key or KEYLESS, timeout=timeout, max_retries=max_retries
        )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._failures = 0  # requests failed in a row
        self.gave_up: str | None = None
        self.stats = {"asked": 0, "answered": 0, "failed": 0, "cached": 0, "reasked": 0}

    # --- one prompt ---------------------------------------------------------------------------------------

    def key(self, messages: Messages, params: dict | None = None) -> str:
        """The cache key: sha256 of the model, the messages and the sampling params (not the endpoint)."""
        doc = {"model": self.model, "messages": messages, "params": {**self.params, **(params or {})}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def ask(self, messages: Messages, *, fresh: bool = False, **params) -> Reply:
        """One answer: from the cache unless `fresh`, else from the endpoint (then cached)."""
        key = self.key(messages, params)
        if not fresh and (text := self._cached(key)) is not None:
            with self._lock:
                self.stats["cached"] += 1
            return Reply(text=text, cached=True)
        if self.gave_up:
            return Reply(text=None, error=f"not asked: {self.gave_up}")
        with self._slots:
            if self.gave_up:  # another thread gave up while this one waited for a slot
                return Reply(text=None, error=f"not asked: {self.gave_up}")
            with self._lock:
                self.stats["asked"] += 1
            try:
                out = self._client.chat.completions.create(
                    model=self.model, messages=messages, **{**self.params, **params}
                )
                text = out.choices[0].message.content or ""
            except self._api_errors as e:
                return self._failed(e)
            except (AttributeError, IndexError, TypeError) as e:  # a 200 whose body is no chat completion
                return self._failed(e)
        with self._lock:
            self._failures = 0
            self.stats["answered"] += 1
        self._store(key, messages, text)
        return Reply(text=text, attempts=1)

    def ask_parsed(
        self, messages: Messages, parse: Callable[[str], Any], *, parse_retries: int = 2, **params
    ) -> Reply:
        """ask, then parse(text); a ValueError from parse re-asks with the cache bypassed, up to
        parse_retries times; then the reply carries the last text and error "unparseable: ..."."""
        attempts = 0
        reply = self.ask(messages, **params)
        for attempt in range(parse_retries + 1):
            attempts += reply.attempts
            if reply.text is None:
                return Reply(text=None, error=reply.error, attempts=attempts)
            try:
                value = parse(reply.text)
            except ValueError as e:
                why = self.scrub(str(e))
                if attempt == parse_retries:
                    return Reply(text=reply.text, error=f"unparseable: {why}", attempts=attempts)
                with self._lock:
                    self.stats["reasked"] += 1
                reply = self.ask(messages, fresh=True, **params)
                continue
            return Reply(text=reply.text, value=value, cached=reply.cached, attempts=attempts)
        raise AssertionError("unreachable")

    def ask_many(
        self,
        prompts: Sequence[Messages],
        *,
        parse: Callable[[str], Any] | None = None,
        parse_retries: int = 2,
        **params,
    ) -> list[Reply]:
        """One Reply per prompt, in order, at most `concurrency` requests in flight."""
        if parse is None:
            one = lambda m: self.ask(m, **params)  # noqa: E731
        else:
            one = lambda m: self.ask_parsed(m, parse, parse_retries=parse_retries, **params)  # noqa: E731
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="llm") as pool:
            return list(pool.map(one, prompts))

    def raise_if_gave_up(self) -> None:
        if self.gave_up:
            raise EndpointError(self.gave_up)

    def scrub(self, text: str) -> str:
        """`text` with the API key replaced: error bodies may echo the key back."""
        return text.replace(self._key, "***") if self._key else text

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- failures and the cache ---------------------------------------------------------------------------

    def _failed(self, e: BaseException) -> Reply:
        why = self.scrub(" ".join(f"{type(e).__name__}: {e}".split()))[:300]
        with self._lock:
            self._failures += 1
            self.stats["failed"] += 1
            if self._failures >= self.max_failures and not self.gave_up:
                self.gave_up = (
                    f"endpoint {self.endpoint} failed {self._failures} requests in a row (last: {why}); "
                    "stopped asking"
                )
                log.warning(self.gave_up)
        return Reply(text=None, error=f"request failed: {why}")

    def _path(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.json" if self.cache_dir is not None else None

    def _cached(self, key: str) -> str | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # unreadable entry: ask again and overwrite it
            return None
        return doc.get("text") if isinstance(doc, dict) and isinstance(doc.get("text"), str) else None

    def _store(self, key: str, messages: Messages, text: str) -> None:
        path = self._path(key)
        if path is None:
            return
        # no fsync: os.replace already makes a killed run leave the old entry or the whole new one
        write_json_atomic(path, {"model": self.model, "messages": messages, "text": text}, fsync=False)
