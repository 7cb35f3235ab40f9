"""fastsae.chats.read_conversations: the reader eval's --data and steer's --prompts share with harvest."""

import gzip
import json

import pytest

from fastsae.chats import (
    NothingUsableError,
    SkipLog,
    SourceError,
    SourceNotFoundError,
    read_conversations,
)
from fastsae.chats.sources import iter_records

CHAT = {"messages": [{"role": "human", "content": "hi"}, {"role": "gpt", "content": [{"text": "yo"}]}]}
PAIR = {"instruction": "q", "output": "a"}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_conversations_are_harvests_records_with_a_source_label(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [CHAT, "{bad", "", PAIR, {"messages": []}])
    log = SkipLog()
    convs = list(read_conversations(data, skip_log=log))
    records = list(iter_records([str(data)], text_mode=False, skip_log=SkipLog()))
    assert [c.messages for c in convs] == [r.messages for r in records]
    assert [(c.dataset, c.row) for c in convs] == [(r.dataset, r.row) for r in records] == [(0, 0), (0, 3)]
    assert [c.source for c in convs] == ["a.jsonl:0", "a.jsonl:3"]
    assert convs[0].messages[1] == {"role": "assistant", "content": "yo"} and convs[0].text is None
    assert log.kept == 2 and log.counts() == {"invalid_json": 1, "empty_messages": 1}
    gz = tmp_path / "b.json.gz"
    gz.write_bytes(gzip.compress(json.dumps([PAIR, CHAT]).encode()))
    convs = list(read_conversations([data, str(gz)], limit=3))
    assert [c.source for c in convs] == ["a.jsonl:0", "a.jsonl:3", "b.json.gz:0"]


def test_a_bad_spec_fails_before_the_first_record_naming_the_flag(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text("plain text\n")
    for spec, error, words in [
        (tmp_path / "missing.parquet", SourceNotFoundError, "no such file"),
        (tmp_path, SourceError, "unsupported file type"),
        (text, SourceError, "holds no conversations"),
    ]:
        with pytest.raises(error, match=words) as e:
            read_conversations([spec], flag="--prompts")  # raised by the call, not by the first next()
        assert str(e.value).startswith(f"--prompts {spec}") and "\n" not in str(e.value)
    assert [c.text for c in read_conversations(text, text_mode=True)] == ["plain text"]


def test_input_with_nothing_usable_is_one_line_saying_what_it_held(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", ["{bad", [1, 2], {"text": "no chat"}])
    with pytest.raises(NothingUsableError) as e:
        list(read_conversations(data, flag="--prompts"))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{data}: 0 usable records of 3")
    assert (
        "invalid_json" in msg
        and "not_an_object" in msg
        and msg.endswith("no usable conversation in --prompts")
    )
    assert list(read_conversations(data, limit=0)) == []  # nothing asked for: not an error
