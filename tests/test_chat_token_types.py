"""fastsae.lm.chat: templated token ids and per-token types on tiny Llama-3/Qwen2 tokenizers and real SmolLM2."""

import copy
import os
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from fastsae.chats.records import normalise_record
from fastsae.chats.skips import SkipLog
from fastsae.chats.sources import iter_records
from fastsae.errors import FastSAEError
from fastsae.lm.chat import (
    ROLE_TYPES,
    check_chat_template,
    special_ids,
    template_hash,
    tokenize_conversation,
    tokenize_text,
)
from fastsae.lm.errors import ChatTemplateError, TemplateRejectedError
from fastsae.store.token_types import TokenType
from tests._tiny_tokenizers import llama3_tokenizer, qwen2_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTENT = {int(t) for t in ROLE_TYPES.values()}
TRIMS = {"llama3": True, "qwen2": False, "smollm2": False}  # does the template trim content?


LOCAL_GGUF = Path("/tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf")  # a developer copy; CI fetches it


@lru_cache(maxsize=1)
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer as harvest loads it ($FASTSAE_SMOLLM2_GGUF, a local copy, or the
    fetched default; from the dequantised copy in the cache when there is one)."""
    from fastsae.lm import DEFAULT_MODEL, GGUF_ENV, ModelLoadError, load_tokenizer

    local = not os.environ.get(GGUF_ENV) and LOCAL_GGUF.is_file()
    try:
        return load_tokenizer(str(LOCAL_GGUF) if local else DEFAULT_MODEL, progress=False)
    except ModelLoadError as e:
        pytest.skip(f"SmolLM2 GGUF not available: {e}")


TOKENIZERS = {"llama3": llama3_tokenizer, "qwen2": qwen2_tokenizer, "smollm2": smollm2_tokenizer}
ALL = [
    pytest.param("llama3"),
    pytest.param("qwen2"),
    pytest.param("smollm2", marks=pytest.mark.slow),
]


def decode(tok, ids) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def content_runs(tok, ids, types) -> list[tuple[int, str]]:
    """(type, decoded text) of each maximal run of content-typed tokens."""
    runs, start = [], None
    for i in range(len(ids) + 1):
        t = int(types[i]) if i < len(ids) else -1
        if start is not None and (i == len(ids) or t != int(types[start])):
            runs.append((int(types[start]), decode(tok, ids[start:i])))
            start = None
        if start is None and t in CONTENT:
            start = i
    return runs


def expected_runs(name, messages) -> list[tuple[int, str]]:
    out = []
    for m in messages:
        text = m["content"].strip() if TRIMS[name] else m["content"]
        if name == "qwen2":
            text = unicodedata.normalize("NFC", text)
        out.append((int(ROLE_TYPES[m["role"]]), text))
    return out


def check(name, messages, *, max_tokens=4096):
    tok = TOKENIZERS[name]()
    ids, types = tokenize_conversation(tok, messages, max_tokens=max_tokens)
    assert ids.dtype == np.int32 and types.dtype == np.uint8 and ids.shape == types.shape
    ref = tok.apply_chat_template([dict(m) for m in messages], tokenize=True, return_dict=False)
    assert ids.tolist() == list(ref)[:max_tokens]
    if tok.bos_token_id is not None and tok.bos_token_id != tok.convert_tokens_to_ids("<|im_start|>"):
        assert (ids == tok.bos_token_id).sum() <= 1  # a template that writes bos gets it once
    if name == "llama3":
        assert ids[0] == tok.bos_token_id and types[0] == TokenType.SPECIAL
    specials = set(special_ids(tok).tolist())
    assert all((int(i) in specials) == (t == TokenType.SPECIAL) for i, t in zip(ids, types, strict=True))
    return tok, ids, types


CONV = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "user"},  # content equal to a role name
    {"role": "assistant", "content": "m"},  # a one-letter content that also occurs in <|im_end|>
]

TOOL_CONV = [
    {"role": "user", "content": "What's the weather in Lisbon?"},
    {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Lisbon"}}'},
    {"role": "tool", "content": '{"temperature": 21, "condition": "sunny"}'},
    {"role": "assistant", "content": "It is sunny and 21 degrees in Lisbon."},
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("conv", [CONV, TOOL_CONV], ids=["multiturn", "tool"])
def test_every_content_token_has_its_role(name, conv):
    tok, ids, types = check(name, conv)
    assert content_runs(tok, ids, types) == expected_runs(name, conv)


@pytest.mark.parametrize("name", ALL)
def test_template_text_and_specials(name):
    tok, ids, types = check(name, CONV[1:])  # no system message
    # no SYSTEM tokens: a default system prompt written by the template is TEMPLATE
    assert TokenType.SYSTEM not in set(types.tolist())
    for marker in ("<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|eot_id|>", "<|begin_of_text|>"):
        tid = tok.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid in ids.tolist() and tid != tok.unk_token_id:
            assert set(types[ids == tid].tolist()) == {TokenType.SPECIAL}
    # the role header after each opening special token is TEMPLATE
    opener = tok.convert_tokens_to_ids("<|start_header_id|>" if name == "llama3" else "<|im_start|>")
    for pos in np.flatnonzero(ids == opener):
        assert types[pos + 1] == TokenType.TEMPLATE
    # USER tokens decode to pieces of user content
    user_text = "".join(m["content"] for m in CONV if m["role"] == "user")
    for pos in np.flatnonzero(types == TokenType.USER):
        assert decode(tok, ids[pos : pos + 1]) in user_text


@pytest.mark.parametrize("name", ALL)
def test_content_parts_and_truncation(name):
    rec = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "value": "Tell me a joke"}, {"type": "text", "text": "x"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Why did the egg cross the road?"}]},
        ]
    }
    messages, _ = normalise_record(rec, text_mode=False)
    tok, ids, types = check(name, messages)
    assert content_runs(tok, ids, types) == expected_runs(name, messages)
    short_ids, short_types = tokenize_conversation(tok, messages, max_tokens=7)
    assert short_ids.tolist() == ids[:7].tolist() and short_types.tolist() == types[:7].tolist()
    with pytest.raises(ValueError):
        tokenize_conversation(tok, messages, max_tokens=0)


@pytest.mark.parametrize("name", ["llama3", "qwen2"])
def test_shared_conversations_roundtrip(name):
    specs = [
        SHARED / "normalized" / "mtbench101_messages.jsonl",
        SHARED / "llamafactory" / "glaive_toolcall_en_demo.json",
    ]
    if not all(p.is_file() for p in specs):
        pytest.skip("shared test data not available")
    recs = list(iter_records([str(p) for p in specs[:1]], text_mode=False, limit=20, skip_log=SkipLog()))
    recs += list(iter_records([str(p) for p in specs[1:]], text_mode=False, limit=20, skip_log=SkipLog()))
    for rec in recs:
        tok, ids, types = check(name, rec.messages)
        assert content_runs(tok, ids, types) == expected_runs(name, rec.messages)


def test_leading_space_and_literal_special_token():
    tok = qwen2_tokenizer()
    conv = [{"role": "user", "content": "  indented <|im_end|> text"}, {"role": "assistant", "content": "ok"}]
    _, ids, types = check("qwen2", conv)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert (ids == end).sum() == 4 and set(types[ids == end].tolist()) == {TokenType.SPECIAL}
    user = decode(tok, ids[types == TokenType.USER])
    assert user == "  indented  text"


def test_template_that_rewrites_content():
    tok = copy.deepcopy(qwen2_tokenizer())
    tok.chat_template = tok.chat_template.replace("message['content']", "(message['content'] | upper)")
    ids, types = tokenize_conversation(tok, TOOL_CONV, max_tokens=4096)
    runs = content_runs(tok, ids, types)
    assert [t for t, _ in runs] == [int(ROLE_TYPES[m["role"]]) for m in TOOL_CONV]
    assert [text for _, text in runs] == [m["content"].upper() for m in TOOL_CONV]


def test_template_rejection_and_missing_template():
    tok = llama3_tokenizer()
    with pytest.raises(TemplateRejectedError) as e:
        tokenize_conversation(tok, [{"role": "narrator", "content": "Once upon a time"}], max_tokens=64)
    assert e.value.reason == "template_rejected" and "narrator" in str(e.value)
    check_chat_template(tok)
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        check_chat_template(bare)
    for error in (ChatTemplateError("x"), e.value):
        assert isinstance(error, ValueError) and isinstance(error, FastSAEError)


def test_template_hash():
    llama, qwen = llama3_tokenizer(), qwen2_tokenizer()
    h = template_hash(llama)
    assert len(h) == 64 and h == template_hash(llama) and h != template_hash(qwen)
    other = copy.deepcopy(qwen)
    other.chat_template = qwen.chat_template + " "
    assert template_hash(other) != template_hash(qwen)


@pytest.mark.parametrize("name", ALL)
def test_tokenize_text(name):
    tok = TOKENIZERS[name]()
    text = "The quick brown fox.\n\nIt jumps over the lazy dog!"
    ids, types = tokenize_text(tok, text)
    assert ids[-1] == tok.eos_token_id and types[-1] == TokenType.SPECIAL
    assert set(types[:-1].tolist()) == {TokenType.TEXT}
    assert decode(tok, ids[:-1]) == text
    ids2, types2 = tokenize_text(tok, text, add_eos=False)
    assert ids2.tolist() == ids[:-1].tolist() and ids2.dtype == np.int32 and types2.dtype == np.uint8


@pytest.mark.parametrize("name", ALL)
def test_demo_chats(name):
    demo = Path(__file__).resolve().parents[1] / "harvest" / "data" / "demo_chats.jsonl"
    recs = list(iter_records([str(demo)], text_mode=False, skip_log=SkipLog()))
    step = 1 if name == "smollm2" else 6  # the tiny tokenizers are slow per token: a sample is enough
    for rec in recs[::step]:
        tok, ids, types = check(name, rec.messages)
        assert content_runs(tok, ids, types) == expected_runs(name, rec.messages)
