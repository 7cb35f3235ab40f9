"""Conversation → token ids + per-token types, for any Hugging Face chat template (no per-family tables).

The conversation is rendered with ``tokenizer.apply_chat_template(messages, tokenize=False)`` and the rendered
string is tokenised with ``add_special_tokens=False`` (exactly what ``apply_chat_template(tokenize=True)`` does;
a template that writes the bos token itself gets it once). Each token's type then comes from where its
characters are in the rendered string:

1. Content spans. The conversation is rendered a second time with every message's content replaced by a
   unique sentinel; the text around the sentinels is the template's own text (role headers, separators, a
   default system prompt). Walking the real rendering piece by piece gives the exact character span of each
   message's content. Templates that trim content are handled (``content.strip()`` is tried), and content a
   template rewrites is delimited by the next template piece. If the sentinel rendering does not line up at
   all, message contents are searched in order in the rendered string (best effort).
2. A token that covers any character of a message's content gets that message's role (SYSTEM, USER,
   ASSISTANT, TOOL); other tokens are TEMPLATE.
3. SPECIAL overrides both: any id among the tokenizer's special tokens and added tokens.

So text that a template writes on its own, such as SmolLM2's default system prompt ("You are a helpful AI
assistant named SmolLM...", inserted when a conversation has no system message), is TEMPLATE, not SYSTEM.
"""

from __future__ import annotations

import hashlib
import re
import weakref

import numpy as np

from fastsae.lm.errors import ChatTemplateError, TemplateRejectedError
from fastsae.store.token_types import TokenType

ROLE_TYPES = {
    "system": TokenType.SYSTEM,
    "user": TokenType.USER,
    "assistant": TokenType.ASSISTANT,
    "tool": TokenType.TOOL,
}

_SENTINEL = "FASTSAE{}SENTINEL{}"  # letters and digits only: survives trim, capitalisation filters aside
_SENTINEL_RE = re.compile(r"FASTSAE(\d+)SENTINEL(\d+)")


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__


def check_chat_template(tokenizer) -> None:
    """Raise ChatTemplateError unless ``tokenizer`` can template and type conversations."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"tokenizer {_name(tokenizer)} has no chat template: use an instruct model or text (block) mode"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateError(
            f"tokenizer {_name(tokenizer)} is not a fast tokenizer: token types need its offset mapping"
        )


def template_hash(tokenizer) -> str:
    """sha256 over the chat template, the tokenizer class and the vocabulary size."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if not isinstance(template, str):  # named templates
        template = repr(sorted(template.items())) if isinstance(template, dict) else repr(template)
    key = f"{template}\0{type(tokenizer).__name__}\0{len(tokenizer)}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


_special_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def special_ids(tokenizer) -> np.ndarray:
    """Sorted int64 ids of the tokenizer's special tokens and added tokens (cached per tokenizer)."""
    try:
        return _special_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids |= set((getattr(tokenizer, "added_tokens_decoder", None) or {}).keys())
    out = np.array(sorted(i for i in ids if i is not None), dtype=np.int64)
    try:
        _special_cache[tokenizer] = out
    except TypeError:
        pass
    return out


def render(tokenizer, messages) -> str:
    """The chat template's rendering of ``messages`` (no generation prompt); TemplateRejectedError if it
    rejects them."""
    import jinja2

    try:
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=False
        )
    except (jinja2.TemplateError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TemplateRejectedError(first[:200]) from None


def _find_content(rendered: str, content: str, start: int) -> tuple[int, int] | None:
    for cand in (content, content.strip()):
        i = rendered.find(cand, start)
        if i >= 0:
            return i, i + len(cand)
    return None


def content_spans(tokenizer, messages, rendered: str) -> list[tuple[int, int, str]]:
    """``(start, end, role)`` character spans of each rendered message's content in ``rendered``."""
    tag = 0
    while any(f"FASTSAE{tag}" in m["content"] for m in messages) or f"FASTSAE{tag}" in rendered:
        tag += 1
    probe = [{**m, "content": _SENTINEL.format(tag, i)} for i, m in enumerate(messages)]
    occ: list[tuple[int, int, int]] = []
    try:
        sentinel_text = render(tokenizer, probe)
        occ = [(m.start(), m.end(), int(m.group(2))) for m in _SENTINEL_RE.finditer(sentinel_text)]
        occ = [o for o in occ if o[2] < len(messages)]
        if len({o[2] for o in occ}) != len(occ):
            occ = []  # a template that repeats content: do not trust the pieces
    except TemplateRejectedError:
        sentinel_text = ""
    bounds = [0] + [b for o in occ for b in o[:2]] + [len(sentinel_text)]
    pieces = [sentinel_text[bounds[j] : bounds[j + 1]] for j in range(0, len(bounds), 2)]
    spans: list[tuple[int, int, str]] = []
    cur = 0
    done: set[int] = set()
    for k, (_, _, i) in enumerate(occ):
        if not rendered.startswith(pieces[k], cur):
            break
        cur += len(pieces[k])
        content, nxt = messages[i]["content"], pieces[k + 1]
        for cand in (content, content.strip(), content.rstrip(), content.lstrip()):
            if rendered.startswith(cand, cur) and rendered.startswith(nxt, cur + len(cand)):
                end = cur + len(cand)
                break
        else:
            end = rendered.find(nxt, cur) if nxt else -1
            if end < 0:
                break
        spans.append((cur, end, messages[i]["role"]))
        done.add(i)
        cur = end
    for i, m in enumerate(messages):  # best effort for whatever did not line up
        if i in done:
            continue
        hit = _find_content(rendered, m["content"], cur)
        if hit is not None:
            spans.append((hit[0], hit[1], m["role"]))
            cur = hit[1]
    return spans


def _types_from_offsets(ids: np.ndarray, offsets: np.ndarray, char_types: np.ndarray, special: np.ndarray):
    n = len(char_types)
    starts = np.minimum(offsets[:, 0], n)  # offsets are >= 0
    ends = np.minimum(offsets[:, 1], n)
    is_content = np.concatenate([[0], np.cumsum(char_types != TokenType.TEMPLATE)])
    has = (is_content[ends] - is_content[starts]) > 0  # the token covers a content character
    padded = np.append(char_types, np.uint8(TokenType.TEMPLATE))
    first, last = padded[starts], padded[np.maximum(ends - 1, 0)]
    types = np.where(first != TokenType.TEMPLATE, first, last).astype(np.uint8)
    types[~has] = TokenType.TEMPLATE
    for t in np.flatnonzero(has & (types == TokenType.TEMPLATE)):  # content strictly inside the token
        seg = char_types[starts[t] : ends[t]]
        types[t] = seg[seg != TokenType.TEMPLATE][0]
    types[np.isin(ids, special)] = TokenType.SPECIAL
    return types


def tokenize_conversation(tokenizer, messages, *, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int32 [T], types uint8 [T])`` of a templated conversation, truncated to ``max_tokens``.

    ``messages``: ``[{"role": "system|user|assistant|tool", "content": str}]``. Raises
    ``TemplateRejectedError`` when the chat template rejects the conversation.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, not {max_tokens}")
    messages = [dict(m) for m in messages]
    rendered = render(tokenizer, messages)
    enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    char_types = np.full(len(rendered), TokenType.TEMPLATE, dtype=np.uint8)
    for start, end, role in content_spans(tokenizer, messages, rendered):
        char_types[start:end] = ROLE_TYPES[role]
    types = _types_from_offsets(ids, offsets, char_types, special_ids(tokenizer))
    return ids[:max_tokens], types[:max_tokens]


def tokenize_text(tokenizer, text: str, *, add_eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int32, types uint8)`` of a plain-text document: TEXT tokens, then the eos token (SPECIAL).

    Block mode packs documents back to back like pretraining, the eos token separating them; no bos is added.
    Special tokens written literally in the text are SPECIAL.
    """
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int32)
    eos = getattr(tokenizer, "eos_token_id", None)
    if add_eos and eos is not None:
        ids = np.append(ids, np.int32(eos))
    types = np.full(len(ids), TokenType.TEXT, dtype=np.uint8)
    types[np.isin(ids, special_ids(tokenizer))] = TokenType.SPECIAL
    return ids, types
