"""One input row → a normalised conversation or plain text, whatever the dataset's schema.

Schemas are detected per record (the first key that matches wins, in this order):

- ``messages``: ``[{role, content}]`` (Tulu, Orca, OpenAI style). ``content`` may be a string or a list of
  text parts ``[{"type": "text", "text" | "value": ...}]`` (joined with newlines).
- ``conversation``: ``[{role, content}]`` (WildChat, LMSYS-Chat-1M).
- ``conversations``: ShareGPT ``[{from, value}]`` (``role``/``content`` turns are accepted too).
- ``history``: MT-Bench-101 ``[{user, bot}]`` pairs.
- ``chosen``: hh-rlhf ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` strings.
- ``text``: plain text (block mode).
- ``chosen`` as a list of messages (preference datasets such as UltraFeedback), ``prompt`` ignored.
- single-turn pairs: a prompt (``instruction``, ``question``, ``prompt`` or ``query``, plus ``input`` or
  ``context`` appended after a blank line) and an answer (``output``, ``response``, ``answer`` or
  ``completion``): Alpaca, Dolly, OpenOrca, GSM8K. A ``system`` or ``system_prompt`` string becomes a system
  message (also for ShareGPT records).

Roles are normalised to system/user/assistant/tool (ShareGPT's ``function_call`` is the assistant calling a
tool, ``observation`` the tool's answer). Anything unusable raises :class:`RecordError` with a short ``reason``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastsae.errors import InputError

ROLES = ("system", "user", "assistant", "tool")

ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
    "tool_response": "tool",
}


class RecordError(InputError):
    """One input record cannot be used. ``reason`` is a short slug (``invalid_json``, ``empty_messages``, ...)."""

    def __init__(self, reason: str, detail: str = "", *, where: str | None = None):
        self.reason = reason
        self.detail = detail
        self.where = where
        msg = f"{reason}: {detail}" if detail else reason
        super().__init__(f"{where}: {msg}" if where else msg)

    def at(self, where: str) -> RecordError:
        """The same error, located (``file.jsonl:13``)."""
        return RecordError(self.reason, self.detail, where=where)


@dataclass(frozen=True)
class Record:
    """One usable input row: either ``messages`` or ``text`` is set."""

    dataset: int  # index into the list of --data specs
    row: int  # row index within that dataset (line / list index / parquet row / document), bad rows counted
    messages: tuple[dict, ...] | None  # [{"role": "system|user|assistant|tool", "content": str}]
    text: str | None  # plain text (block mode)


def _short(value: object, n: int = 80) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def normalise_role(role: object) -> str:
    if not isinstance(role, str) or not role.strip():
        raise RecordError("unknown_role", f"role {_short(role)}")
    norm = ROLE_ALIASES.get(role.strip().lower())
    if norm is None:
        raise RecordError("unknown_role", f"role {_short(role)}")
    return norm


def normalise_content(content: object) -> str:
    """A message's content as one string: str, or a list of text parts."""
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text", part.get("value"))
                if not isinstance(text, str):
                    raise RecordError("non_str_content", f"text part {_short(part)}")
                texts.append(text)
            else:
                raise RecordError("non_text_content", f"content part {_short(part)}")
        content = "\n".join(texts)
    if content is None:
        raise RecordError("empty_content", "content is null")
    if not isinstance(content, str):
        raise RecordError("non_str_content", f"content of type {type(content).__name__}")
    if not content.strip():
        raise RecordError("empty_content", "content is empty")
    return content


def _turns(turns: object, key: str) -> list[dict]:
    if turns is None:
        raise RecordError("empty_messages", f"{key!r} is null")
    if not isinstance(turns, list):
        raise RecordError("bad_messages", f"{key!r} is a {type(turns).__name__}, not a list")
    if not turns:
        raise RecordError("empty_messages", f"{key!r} is empty")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError("bad_turn", f"{key}[{i}] is a {type(turn).__name__}, not an object")
        role = turn.get("role", turn.get("from"))
        if "content" in turn:
            content = turn["content"]
        else:
            content = turn.get("value", turn.get("text"))
        try:
            out.append({"role": normalise_role(role), "content": normalise_content(content)})
        except RecordError as e:
            raise RecordError(e.reason, f"{key}[{i}]: {e.detail}") from None
    return out


def _history(history: object) -> list[dict]:
    if not isinstance(history, list) or not history:
        raise RecordError("empty_messages", "'history' is empty or not a list")
    out = []
    for i, pair in enumerate(history):
        if not isinstance(pair, dict):
            raise RecordError("bad_turn", f"history[{i}] is not an object")
        for key, role in (("user", "user"), ("bot", "assistant")):
            if key in pair:
                try:
                    out.append({"role": role, "content": normalise_content(pair[key])})
                except RecordError as e:
                    raise RecordError(e.reason, f"history[{i}].{key}: {e.detail}") from None
    if not out:
        raise RecordError("empty_messages", "'history' has no user/bot turns")
    return out


_HH_SPLIT = re.compile(r"\n\n(Human|Assistant): ?")


def _hh(text: object) -> list[dict]:
    if not isinstance(text, str) or not text.strip():
        raise RecordError("empty_messages", "'chosen' is empty or not a string")
    parts = _HH_SPLIT.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise RecordError(
            "bad_messages", "'chosen' is not a '\\n\\nHuman: ...\\n\\nAssistant: ...' transcript"
        )
    out = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        out.append({"role": role, "content": normalise_content(content.strip())})
    return out


_PROMPT_KEYS = ("instruction", "question", "prompt", "query")
_CONTEXT_KEYS = ("input", "context")
_ANSWER_KEYS = ("output", "response", "answer", "completion")
_SYSTEM_KEYS = ("system", "system_prompt")


def _system(rec: dict) -> list[dict]:
    for key in _SYSTEM_KEYS:
        value = rec.get(key)
        if isinstance(value, str) and value.strip():
            return [{"role": "system", "content": value}]
    return []


def _single_turn(rec: dict) -> list[dict] | None:
    """Alpaca / Dolly / OpenOrca / GSM8K style prompt-answer pairs (+ optional context and system prompt)."""
    q = next((k for k in _PROMPT_KEYS if k in rec), None)
    a = next((k for k in _ANSWER_KEYS if k in rec and k != q), None)
    if q is None or a is None:
        return None
    try:
        prompt = normalise_content(rec[q])
        for key in _CONTEXT_KEYS:
            extra = rec.get(key)
            if key != a and isinstance(extra, str) and extra.strip():
                prompt = f"{prompt}\n\n{extra}"
                break
        answer = normalise_content(rec[a])
    except RecordError as e:
        raise RecordError(e.reason, f"{q}/{a}: {e.detail}") from None
    return _system(rec) + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def normalise_record(rec: object, *, text_mode: bool) -> tuple[tuple[dict, ...] | None, str | None]:
    """``(messages, text)`` for one raw record; exactly one is not None. Raises RecordError."""
    if not isinstance(rec, dict):
        raise RecordError("not_an_object", f"record is a {type(rec).__name__}, not an object")
    if text_mode and "text" in rec:
        text = rec["text"]
        if not isinstance(text, str):
            raise RecordError("non_str_content", f"'text' of type {type(text).__name__}")
        if not text.strip():
            raise RecordError("empty_content", "'text' is empty")
        return None, text
    if "messages" in rec:
        messages = _turns(rec["messages"], "messages")
    elif "conversation" in rec:
        messages = _turns(rec["conversation"], "conversation")
    elif "conversations" in rec:
        messages = _turns(rec["conversations"], "conversations")
        if messages[0]["role"] != "system":
            messages = _system(rec) + messages
    elif "history" in rec:
        messages = _history(rec["history"])
    elif "chosen" in rec:  # hh-rlhf transcript string, or a list of messages (preference datasets)
        chosen = rec["chosen"]
        messages = _turns(chosen, "chosen") if isinstance(chosen, list) else _hh(chosen)
    elif "text" in rec:
        raise RecordError("text_only", "plain-text record in conversation mode (use text mode)")
    else:
        messages = _single_turn(rec)
        if messages is None:
            raise RecordError("unknown_schema", f"no known conversation key in {_short(sorted(rec), 120)}")
    if all(m["role"] == "system" for m in messages):
        raise RecordError("empty_messages", "only system messages")
    return tuple(messages), None
