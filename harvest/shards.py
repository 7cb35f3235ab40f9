"""The shard sink: a background thread that appends forwarded sequences to shards, in input order.

What decides a shard's size: ``--shard-tokens``. A shard is committed as soon as the sequence just
appended brings it to ``shard_tokens`` tokens or more, so it holds at least that many tokens and at most
that many plus one sequence (a conversation, or a block, is never split). The last shard of a run holds
what is left. A crash (SIGKILL, power loss) therefore loses the open shard (fewer than ``shard_tokens``
tokens plus one sequence) and the forward passes of the windows still queued for this thread (at most
two, of at most ``--sort-window`` sequences each). SIGINT and SIGTERM write the queued windows and drop the
open shard cleanly.

Shard ends need not be window ends: the runner forms its length-sorted windows from the start of the
stream on every run, so a resumed run re-forms the window a crash cut and forwards exactly the batches
that hold sequences not yet committed: their values equal an uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from fastsae.harvest.batching import SeqItem
from fastsae.harvest.config import HarvestConfig


class ShardSink:
    """Appends windows of (sequence, activations) in order; commits a shard once it holds `shard_tokens`."""

    def __init__(
        self,
        cfg: HarvestConfig,
        out: Path,
        meta: dict,
        *,
        d_model: int,
        next_seq: int,
        on_stored: Callable[[int], None] | None = None,
    ):
        self.cfg, self.out, self.meta, self.d_model = cfg, out, meta, d_model
        self.seq = next_seq
        self.writer = None
        self.shards = 0
        self.sequences = 0  # in the shards this sink committed
        self.error: BaseException | None = None
        self.on_stored = on_stored
        self.q: queue.Queue = queue.Queue(maxsize=2)
        # Set when the thread is done. Not thread.join()/is_alive(): on Python 3.11 a join interrupted by a
        # signal (Ctrl-C, SIGTERM) marks a running thread as stopped, and its open shard would be left behind.
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fastsae-shard-writer", daemon=True)
        self.thread.start()

    def put(self, items: list[tuple[SeqItem, dict]]) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(items)

    def _open(self, first_sequence: int):
        from fastsae.store import ShardWriter

        self.writer = ShardWriter(
            self.out, writer=self.cfg.writer, seq=self.seq, first_sequence=first_sequence,
            layers=list(self.cfg.layers), d_model=self.d_model, dtype=self.cfg.dtype, meta=self.meta,
            fp8_rounding=self.cfg.fp8_rounding,  # the rows come encoded already (forward.fp8_parts): recorded
        )  # fmt: skip

    def _run(self) -> None:
        try:
            self._write()
        finally:
            self.done.set()

    def _write(self) -> None:
        try:
            while (items := self.q.get()) not in (None, "abort"):
                for item, acts in items:
                    if self.writer is None:
                        self._open(item.index)
                    self.writer.append(
                        token_ids=item.token_ids, token_types=item.token_types, acts=acts, source=item.source,
                        doc_starts=item.doc_starts, doc_sources=item.doc_sources,
                    )  # fmt: skip
                    if self.on_stored is not None:
                        self.on_stored(item.index)
                    if self.writer.num_tokens >= self.cfg.shard_tokens:
                        self._commit()
            if items is None and self.writer is not None and self.writer.num_sequences:
                self._commit()
            elif self.writer is not None:  # aborted: the partial shard is dropped, resume redoes it
                self.writer.abort()
        except BaseException as e:  # surfaced in the main thread by put()/close()
            self.error = e
            if self.writer is not None:
                self.writer.abort()
            while self.q.get() not in (None, "abort"):  # drain so the producer never blocks
                pass

    def _commit(self) -> None:
        self.writer.commit()
        self.sequences += self.writer.num_sequences
        self.writer = None
        self.seq += 1
        self.shards += 1

    def close(self, *, commit: bool = True) -> None:
        """Finish: commit the last shard (or drop it when `commit` is False, after an error)."""
        if self.done.is_set():
            return
        self.q.put(None if commit else "abort")  # after an interrupted close(): the first one wins
        self.done.wait()
        if commit and self.error is not None:
            raise self.error
