"""Conversations from files and the hub, in every format harvest reads (floor 1).

Harvest's --data, eval's --data and steer's --prompts read their input here, so every command accepts
the same files, normalises the same schemas, skips the same rows and fails with the same one-line errors.

The API for a consumer::

    from fastsae.chats import read_conversations

    for conv in read_conversations(["chats.jsonl", "more.parquet"], limit=100, flag="--prompts"):
        conv.messages  # ({"role": "system|user|assistant|tool", "content": str}, ...)
        conv.source  # "chats.jsonl:12": file name (or hub NAME@SPLIT) and 0-based row

``read_conversations(specs, *, text_mode=False, limit=None, flag="--data", skip_log=None)`` takes one spec
or a list: local ``.jsonl``, ``.json``, ``.parquet``, ``.txt`` (text mode only), each optionally gzipped,
or a hub dataset ``NAME[:CONFIG][@SPLIT]``. It yields :class:`Conversation` s (``messages``, ``text`` in
text mode, ``source``, ``dataset``, ``row``). Errors are InputErrors with a one-line message naming
the spec (after ``flag``): :class:`SourceError` for a spec that cannot be read (missing file:
:class:`SourceNotFoundError`, also a FileNotFoundError; unsupported format; damaged file), raised before
the first record; :class:`NothingUsableError` when the input ends without one usable record, saying what
it held instead. Bad rows are skipped and counted in ``skip_log`` (a :class:`SkipLog`).

Modules: ``formats`` (raw rows of one file or hub dataset, whatever its bytes are), ``records`` (one row
-> a normalised conversation or text, whatever its schema), ``sources`` (spec parsing, provenance,
``iter_records``), ``skips`` (the skip log, the nothing-usable error), ``conversations`` (the API above).
Imports nothing of ours but fastsae.errors and fastsae.atomic.
"""

from fastsae.chats.conversations import Conversation, read_conversations
from fastsae.chats.formats import SourceError, SourceNotFoundError
from fastsae.chats.records import RecordError
from fastsae.chats.skips import NothingUsableError, SkipLog

__all__ = [
    "Conversation",
    "NothingUsableError",
    "RecordError",
    "SkipLog",
    "SourceError",
    "SourceNotFoundError",
    "read_conversations",
]
