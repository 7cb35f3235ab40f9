"""chats.sources / chats.records: data specs, schema detection, bad-record skipping, provenance."""

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from fastsae.chats.records import normalise_record
from fastsae.chats.skips import SkipLog
from fastsae.chats.sources import (
    Record,
    RecordError,
    SourceError,
    SourceNotFoundError,
    describe_sources,
    iter_records,
    parse_spec,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO = Path(__file__).resolve().parents[1] / "harvest" / "data" / "demo_chats.jsonl"


def shared(rel: str) -> str:
    path = SHARED / rel
    if not path.is_file():
        pytest.skip(f"shared test data {rel} not available")
    return str(path)


def read_all(specs, *, text_mode=False, limit=None, on_error="skip"):
    log = SkipLog()
    recs = list(iter_records(specs, text_mode=text_mode, limit=limit, skip_log=log, on_error=on_error))
    return recs, log


# ---- schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rec, expected",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, [("user", "hi")]),
        (
            {
                "messages": [
                    {
                        "role": "User",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "value": "b"}],
                    }
                ]
            },
            [("user", "a\nb")],
        ),
        ({"conversation": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, None),
        (
            {
                "system": "be kind",
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "function_call", "value": "{}"},
                    {"from": "observation", "value": "r"},
                    {"from": "gpt", "value": "a"},
                ],
            },
            [("system", "be kind"), ("user", "q"), ("assistant", "{}"), ("tool", "r"), ("assistant", "a")],
        ),
        ({"history": [{"user": "q1", "bot": "a1"}, {"user": "q2", "bot": "a2"}]}, None),
        ({"chosen": "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: a2", "rejected": "x"}, None),
        ({"question": "q", "answer": "a"}, [("user", "q"), ("assistant", "a")]),
        ({"instruction": "q", "input": "ctx", "output": "a"}, [("user", "q\n\nctx"), ("assistant", "a")]),
        ({"prompt": "q", "completion": "a"}, [("user", "q"), ("assistant", "a")]),
        (
            {"system_prompt": "sys", "question": "q", "response": "a", "id": "orca"},
            [("system", "sys"), ("user", "q"), ("assistant", "a")],
        ),
        ({"instruction": "q", "context": "c", "response": "a"}, [("user", "q\n\nc"), ("assistant", "a")]),
        (
            {
                "prompt": "q",
                "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            },
            [("user", "q"), ("assistant", "a")],
        ),
    ],
)
def test_schemas(rec, expected):
    messages, text = normalise_record(rec, text_mode=False)
    assert text is None
    got = [(m["role"], m["content"]) for m in messages]
    if expected is None:  # alternating q/a pairs
        assert [r for r, _ in got] == ["user", "assistant"] * (len(got) // 2)
        assert got[0][1] == "q" or got[0][1] == "q1"
    else:
        assert got == expected


@pytest.mark.parametrize(
    "rec, reason",
    [
        ({"messages": []}, "empty_messages"),
        ({"messages": [{"role": "system", "content": "be brief"}]}, "empty_messages"),
        ({"messages": None}, "empty_messages"),
        ({"messages": "hi"}, "bad_messages"),
        ({"messages": ["hi"]}, "bad_turn"),
        ({"messages": [{"role": "user", "content": None}]}, "empty_content"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty_content"),
        ({"messages": [{"role": "user", "content": 3}]}, "non_str_content"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "url": "x"}]}]}, "non_text_content"),
        ({"messages": [{"role": "narrator", "content": "hi"}]}, "unknown_role"),
        ({"messages": [{"content": "hi"}]}, "unknown_role"),
        ({"text": "plain"}, "text_only"),
        ({"foo": 1}, "unknown_schema"),
        ([1, 2], "not_an_object"),
    ],
)
def test_bad_records(rec, reason):
    with pytest.raises(RecordError) as e:
        normalise_record(rec, text_mode=False)
    assert e.value.reason == reason
    assert isinstance(e.value, ValueError)


def test_text_mode_uses_text_and_allows_conversations():
    assert normalise_record({"text": "doc", "messages": []}, text_mode=True) == (None, "doc")
    messages, text = normalise_record({"messages": [{"role": "user", "content": "x"}]}, text_mode=True)
    assert text is None and messages[0]["content"] == "x"


# ---- files, bad lines, rows -------------------------------------------------------------------------------


def _broken_jsonl(tmp_path: Path) -> Path:
    good = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
    lines = [
        json.dumps(good).encode(),  # 0 ok
        b'{"messages": [{"role": "user", "content": "unterminated"',  # 1 invalid_json
        json.dumps({"messages": []}).encode(),  # 2 empty_messages
        b"",  # 3 blank: not a record, still a row number
        json.dumps({"messages": [{"role": "user", "content": None}]}).encode(),  # 4 empty_content
        json.dumps({"messages": [{"role": "user", "content": 42}]}).encode(),  # 5 non_str_content
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),  # 6 unknown_role
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # 7 undecodable (latin-1 byte)
        b"[1, 2, 3]",  # 8 not_an_object
        json.dumps({"id": 9}).encode(),  # 9 unknown_schema
        json.dumps(good).encode(),  # 10 ok: lines after bad ones are kept
        json.dumps(
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
        ).encode(),
    ]
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_broken_jsonl_skips_and_counts(tmp_path):
    path = _broken_jsonl(tmp_path)
    recs, log = read_all([str(path)])
    assert [r.row for r in recs] == [0, 10, 11]
    assert all(isinstance(r, Record) and r.dataset == 0 and r.text is None for r in recs)
    assert log.kept == 3
    assert log.counts() == {
        "invalid_json": 1,
        "empty_messages": 1,
        "empty_content": 1,
        "non_str_content": 1,
        "unknown_role": 1,
        "undecodable": 1,
        "not_an_object": 1,
        "unknown_schema": 1,
    }
    assert {e["row"] for e in log.entries} == {1, 2, 4, 5, 6, 7, 8, 9}
    summary = log.summary()
    assert summary.startswith("kept 3 of 11 records; skipped 8: ") and "1 invalid_json" in summary
    out = log.write(tmp_path / "skipped.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"dataset", "row", "reason", "detail"}


def test_later_stage_skips_are_taken_out_of_kept(tmp_path):
    path = _broken_jsonl(tmp_path)
    log = SkipLog()
    for rec in iter_records([str(path)], text_mode=False, skip_log=log):
        if rec.row == 10:
            log.record(rec.dataset, rec.row, "template_rejected", "Unsupported role")
    assert log.kept == 2 and log.skipped == 9
    assert log.summary().startswith("kept 2 of 11 records; skipped 9: ")


def test_on_error_fail_names_file_and_line(tmp_path):
    path = _broken_jsonl(tmp_path)
    with pytest.raises(RecordError, match=r"broken\.jsonl:2: invalid_json") as e:
        read_all([str(path)], on_error="fail")
    assert e.value.reason == "invalid_json"
    assert "\n" not in str(e.value)


def test_limit_counts_kept_records_across_specs(tmp_path):
    path = _broken_jsonl(tmp_path)
    recs, log = read_all([str(path), str(path)], limit=4)
    assert [(r.dataset, r.row) for r in recs] == [(0, 0), (0, 10), (0, 11), (1, 0)]
    assert log.kept == 4
    assert read_all([str(path)], limit=0)[0] == []


def test_json_list_gz_parquet_and_txt(tmp_path):
    conv = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    (tmp_path / "list.json").write_text(json.dumps([conv, {"messages": []}, conv]))
    (tmp_path / "lines.json").write_text(json.dumps(conv) + "\n" + json.dumps(conv) + "\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps(conv) + "\n")
    recs, log = read_all([str(tmp_path / n) for n in ("list.json", "lines.json", "c.jsonl.gz")])
    assert [(r.dataset, r.row) for r in recs] == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 0)]
    assert log.counts() == {"empty_messages": 1}

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([conv, conv]), tmp_path / "c.parquet")
    recs, _ = read_all([str(tmp_path / "c.parquet")])
    assert [r.messages[1]["content"] for r in recs] == ["a", "a"]

    (tmp_path / "paras.txt").write_text("First doc\nline two\n\n\n  \nSecond doc\n")
    (tmp_path / "lines.txt").write_text("article one\narticle two\n")
    recs, _ = read_all([str(tmp_path / "paras.txt"), str(tmp_path / "lines.txt")], text_mode=True)
    assert [r.text for r in recs] == ["First doc\nline two", "Second doc", "article one", "article two"]
    with pytest.raises(SourceError, match="text"):
        read_all([str(tmp_path / "paras.txt")])


def test_specs_and_provenance(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "x"}\n')
    (d,) = describe_sources([str(path)])
    assert d["kind"] == "jsonl" and d["bytes"] == path.stat().st_size
    assert d["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    hub = parse_spec("openai/gsm8k:main@test")
    assert (hub.kind, hub.name, hub.config, hub.split) == ("hub", "openai/gsm8k", "main", "test")
    assert parse_spec("allenai/tulu-3-sft-mixture").split == "train"
    with pytest.raises(SourceNotFoundError, match="no such file"):
        describe_sources([str(tmp_path / "missing.jsonl")])
    assert issubclass(SourceNotFoundError, FileNotFoundError)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match="unsupported file type"):
        parse_spec(str(tmp_path / "x.csv"))


def test_hub_offline_error_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SourceError) as e:
        read_all(["fastsae-test/no-such-dataset@train"])
    assert "fastsae-test/no-such-dataset" in str(e.value) and "\n" not in str(e.value)


# ---- real data ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel, text_mode, n, roles",
    [
        ("normalized/mtbench101_messages.jsonl", False, 1388, {"user", "assistant"}),
        ("fastchat/data_dummy_conversation.json", False, 500, {"user", "assistant"}),
        ("llamafactory/glaive_toolcall_en_demo.json", False, 300, {"user", "assistant", "tool"}),
        ("llamafactory/v1_sft_demo.jsonl", False, 500, {"user", "assistant"}),
        ("mtbench101/mtbench101.jsonl", False, 1388, {"user", "assistant"}),
        ("llamafactory/c4_demo.jsonl", True, 300, None),
        ("llamafactory/wiki_demo.txt", True, 30, None),
        ("tinyshakespeare/input.txt", True, 7222, None),
    ],
)
def test_shared_data(rel, text_mode, n, roles):
    recs, log = read_all([shared(rel)], text_mode=text_mode)
    assert len(recs) == n and log.skipped == 0
    if roles is None:
        assert all(r.text and r.text.strip() for r in recs)
    else:
        assert {m["role"] for r in recs for m in r.messages} == roles
        assert all(isinstance(m["content"], str) and m["content"] for r in recs for m in r.messages)


def test_hh_rlhf_gzip_and_mixed_specs():
    recs, log = read_all(
        [shared("hh-rlhf/harmless-base_test.jsonl.gz"), shared("gsm8k/test.jsonl")], limit=2400
    )
    assert len(recs) == 2400 and {r.dataset for r in recs} == {0, 1}
    assert set(log.counts()) <= {"empty_content"}  # a few transcripts have an empty turn


def test_demo_chats_parse_cleanly():
    recs, log = read_all([str(DEMO)])
    assert log.skipped == 0 and 150 <= len(recs) <= 260
    roles = {m["role"] for r in recs for m in r.messages}
    assert roles == {"system", "user", "assistant", "tool"}


def test_hub_stream_rows(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, *, split, streaming):
        calls.append((name, config, split, streaming))
        conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        return iter([{"messages": conv}, {"messages": []}, {"conversation": conv}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recs, log = read_all(["org/chats:default@train_sft"])
    assert calls == [("org/chats", "default", "train_sft", True)]
    assert [(r.dataset, r.row) for r in recs] == [(0, 0), (0, 2)] and log.counts() == {"empty_messages": 1}
