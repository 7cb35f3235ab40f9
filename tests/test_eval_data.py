"""`fastsae eval --data` reads every format harvest reads (fastsae.chats): same sequences, same skips, same errors."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastsae.chats import SourceError
from fastsae.interp.evalset import EvalSetError, data_set
from tests._tiny_models import tiny_tokenizer
from tests.test_harvest_store import write_chats


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer("llama")


def sequences(evalset):
    return [(s.token_ids.tolist(), s.token_types.tolist()) for s in evalset.sequences]


def test_parquet_and_gzipped_json_give_the_sequences_of_the_same_jsonl(tmp_path, tokenizer):
    chats = write_chats(tmp_path / "chats.jsonl", n=12)  # with one invalid line and one empty conversation
    rows = []
    for line in chats.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    gz = tmp_path / "chats.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(rows).encode()))
    parquet = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist([r for r in rows if r["messages"]]), parquet)

    want, skipped = data_set([str(chats)], tokenizer, max_tokens=64, limit=None)
    assert len(want) == 12 and skipped == {"invalid_json": 1, "empty_messages": 1}
    assert want.sequences[8].source == "chats.jsonl:9"  # the row of harvest's skipped.jsonl: lines counted
    for path in (gz, parquet):
        got, _ = data_set([str(path)], tokenizer, max_tokens=64, limit=None)
        assert sequences(got) == sequences(want), path.name
    assert max(len(s.token_ids) for s in want.sequences) == 64  # truncated as harvest does
    assert sequences(data_set([str(parquet)], tokenizer, max_tokens=64, limit=5)[0]) == sequences(want)[:5]


def test_input_without_a_conversation_is_one_clear_line(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "plain"}\n{oops\n')
    with pytest.raises(EvalSetError) as e:
        data_set([str(bad)], tokenizer, max_tokens=64, limit=None)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"empty evaluation set: {bad}: 0 usable records of 2")
    assert "text_only" in msg and "invalid_json" in msg
    text = tmp_path / "doc.txt"
    text.write_text("plain text\n")
    with pytest.raises(SourceError, match=f"--data {text}: a plain-text file holds no conversations"):
        data_set([str(text)], tokenizer, max_tokens=64, limit=None)
