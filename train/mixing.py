"""The mixing buffer's state machine (see ``train/reader.py`` for the algorithm and its guarantees).

``Mixer.batches()`` runs in the reader's batch thread: it pulls chunk pieces from a chunk
read-ahead thread, mixes them and yields ready batches, each with a snapshot of the state right
after it (``snapshot``: scalars and the slot-id changes of that batch), which the consumer-side
reader replays into a ``Position`` (train/position.py), so that it can resume from the last batch it handed out however
far the batch thread has run ahead.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import numpy as np
import torch

from fastsae.store.dtypes import widen
from fastsae.train.prefetch import Prefetcher
from fastsae.train.selection import STORED_NUMPY, TokenSelection

ROUND_STREAM = 0x5EED
AHEAD_ROWS = 4096  # batches smaller than this are cut from one gather of the round's next AHEAD_ROWS rows
READAHEAD_CHUNKS = 4  # chunks whose disk reads are requested ahead of the one paged in (~19 MB at d 576 bf16)
# torch dtype of stored rows as they travel (bf16 bits as int16, fp8 packed with their scales as uint8)
TORCH_STORED = {np.uint16: torch.int16, np.float16: torch.float16, np.float32: torch.float32, np.uint8: torch.uint8}  # fmt: skip


class Mixer:
    """Epochs of chunk pieces -> mixing buffer -> batches: float32, or the stored dtype (``stored``; pinned with
    ``pin``, for a CUDA upload decoded on the device)."""

    def __init__(
        self,
        selection: TokenSelection,
        *,
        batch_size: int,
        buffer_tokens: int,
        shuffle: bool,
        seed: int,
        epochs: int | None,
        drop_last: bool,
        stored: bool,
        pin: bool,
        prefetch: int,
        mapped: bool = False,
        part: tuple[int, int] = (0, 1),
    ):
        self.selection, self.batch_size, self.shuffle, self.seed = selection, batch_size, shuffle, seed
        self.epochs, self.drop_last, self.prefetch = epochs, drop_last, prefetch
        self.stored, self.pin = stored or pin, pin
        self.d_model = selection.d_model
        # (index, count): this process takes rows [lo, hi) of each batch of batch_size (data-parallel ranks); the
        # mixing, and so every position and state, is the whole batch's on every rank
        n = batch_size // part[1]
        self._lo, self._hi = part[0] * n, (part[0] + 1) * n
        self.width = selection.width  # columns of a stored row (fp8: codes + the scale's 4 bytes)
        self.buffer_tokens = buffer_tokens
        self._np_dtype = STORED_NUMPY[selection.dtype]
        # mapped (uncompressed store, shuffled): the buffer is the slot table alone, rows are read in place from
        # the memmaps when emitted (one copy per token, no buffer RAM); else a copy of the rows, [B, width] stored
        self.mapped = mapped and shuffle
        self._buffer = self._buffer_t = None
        if not self.mapped:
            self._buffer = np.empty((buffer_tokens, self.width), self._np_dtype)  # [B, width], stored dtype
            # the same memory as a torch tensor: index_select gathers rows faster than numpy's fancy indexing
            self._buffer_t = torch.from_numpy(
                self._buffer.view(np.int16) if self._np_dtype is np.uint16 else self._buffer
            )
        self._scratch: torch.Tensor | None = None  # [batch_size, width] stored dtype, for the CPU gather
        self._ahead: torch.Tensor | None = None  # [AHEAD_ROWS, width] stored rows gathered for small batches
        self._ahead_ids: np.ndarray | None = None  # their canonical ids, sorted
        self._slot_ids = np.full(buffer_tokens, -1, np.int64)  # [B] canonical token id per slot, -1 = empty
        self._epoch = 0
        self._round = 0  # rounds started in this epoch; 0 = the buffer still has to be filled
        self._pending = np.zeros(0, np.int64)  # slots still to emit this round
        self._pos = 0  # next index into _pending
        self._cursor = 0  # tokens of this epoch's chunk stream consumed
        self._exhausted = False  # this epoch's chunk stream has ended
        self._finished = False
        self.tokens_emitted = 0
        self._piece: tuple[np.ndarray, np.ndarray] | None = None  # (ids [n], stored rows [n, width]) in use
        # changes to _slot_ids since the last snapshot, as (slots, ids or -1); the arrays are never written again
        self._delta: list[tuple[np.ndarray, np.ndarray | int]] = []
        self._piece_pos = 0
        self._prefetcher: Prefetcher | None = None
        self._finalizer = weakref.finalize(self, _close_prefetcher, [None])

    # -- the chunk stream --------------------------------------------------------------------------
    def _produce(self, epoch: int, cursor: int):
        """Factory for the prefetch thread: pieces (ids, acts) from (epoch, cursor) on, and a
        ``("end", epoch)`` marker after each epoch. Holds no reference to the reader."""
        sel, shuffle, last = self.selection, self.shuffle, self.epochs
        # mapped: the chunk thread pages each chunk's span in and hands out its ids only
        read = sel.touch_chunk if self.mapped else sel.read_chunk
        ahead = READAHEAD_CHUNKS

        def produce():
            e, skip_tokens = epoch, cursor
            while last is None or e < last:
                order = sel.chunk_order(e, shuffle=shuffle)
                sizes = (sel.chunk_stop - sel.chunk_start)[order]
                ends = np.cumsum(sizes)
                k = int(np.searchsorted(ends, skip_tokens, side="right"))
                skip = skip_tokens - (int(ends[k - 1]) if k else 0)
                for i in range(k, min(k + ahead, len(order))):
                    sel.advise_chunk(int(order[i]))
                for i in range(k, len(order)):
                    if i + ahead < len(order):  # disk reads of the chunks after this one start now
                        sel.advise_chunk(int(order[i + ahead]))
                    yield read(int(order[i]), skip)
                    skip = 0
                yield ("end", e)
                e, skip_tokens = e + 1, 0

        return produce

    def _next_piece(self) -> bool:
        """Load the next piece of this epoch's stream; False at the end of the epoch."""
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(self._produce(self._epoch, self._cursor), depth=self.prefetch)
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_prefetcher, [self._prefetcher])
        item = self._prefetcher.get()
        if item is None:
            raise RuntimeError("reader stream ended early")
        if isinstance(item[0], str):
            assert item[1] == self._epoch, (item, self._epoch)
            self._exhausted = True
            self._piece = None
            return False
        self._piece, self._piece_pos = item, 0
        return True

    def _take(self, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Up to n next tokens of this epoch's stream, as (ids, acts) pieces."""
        while n > 0 and not self._exhausted:
            if self._piece is None or self._piece_pos == len(self._piece[0]):
                if not self._next_piece():
                    return
            ids, acts = self._piece
            m = min(n, len(ids) - self._piece_pos)
            a = self._piece_pos
            self._piece_pos += m
            self._cursor += m
            n -= m
            yield ids[a : a + m], None if acts is None else acts[a : a + m]

    # -- the mixing buffer -------------------------------------------------------------------------
    def _fill(self, slots: np.ndarray) -> None:
        """Refill ``slots`` (in order) from the stream; slots left over at its end become empty."""
        done = 0
        for ids, rows in self._take(len(slots)):
            part = slots[done : done + len(ids)]
            if self._buffer is not None:
                self._buffer[part] = rows
            self._slot_ids[part] = ids
            self._delta.append((part, ids))
            done += len(ids)
        if done < len(slots):
            self._slot_ids[slots[done:]] = -1
            self._delta.append((slots[done:], -1))

    def _start_round(self) -> bool:
        """Choose the slots to emit next; False when the epoch limit is reached."""
        while True:
            if self._finished:
                return False
            rng = np.random.default_rng([self.seed, ROUND_STREAM, self._epoch, self._round])
            if not self.shuffle:
                if not self._exhausted:
                    self._pending, self._pos = np.zeros(0, np.int64), 0  # sequential: stream straight out
                    self._round += 1
                    return True
            elif self._round == 0:
                self._fill(np.arange(self.buffer_tokens))
                self._round = 1
                continue
            elif not self._exhausted:
                self._pending = rng.permutation(self.buffer_tokens)[: max(1, self.buffer_tokens // 2)]
            else:
                self._pending = rng.permutation(np.flatnonzero(self._slot_ids >= 0))
            if len(self._pending):
                self._pos = 0
                self._round += 1
                return True
            # the epoch is over: everything emitted, the buffer is empty
            self._epoch += 1
            self._round, self._cursor, self._exhausted = 0, 0, False
            if self.epochs is not None and self._epoch >= self.epochs:
                self._finished = True

    def _window(self, start: int, n: int) -> tuple[int, int]:
        """Which of the n rows at batch positions [start, start + n) are this part's: rows [a, b) of them."""
        return max(self._lo - start, 0), max(min(self._hi - start, n), 0)

    def _put(self, dst: torch.Tensor, start: int, rows: np.ndarray) -> None:
        """Stored ``rows`` (batch positions start on) into this part's dst: decoded into the float32 batch (CPU) or
        copied as stored into the stored-dtype block (``stored``: e.g. pinned for CUDA, decoded on the device)."""
        a, b = self._window(start, len(rows))
        if a >= b:
            return
        at = start + a - self._lo
        if self.stored:
            dst.numpy().view(self._np_dtype)[at : at + b - a] = rows[a:b]
        else:
            self.selection.decode(rows[a:b], dst[at : at + b - a])

    def _gather(self, dst: torch.Tensor, start: int, slots: np.ndarray) -> None:
        """The rows of buffer ``slots`` (batch positions start on, those of this part) into dst, in canonical-id
        (store) order: from the memmaps (mapped) or the buffer copy; decoded to float32 unless dst is a stored-dtype block. torch does both steps, each
        faster than numpy's: index_select and the exact bf16/fp16 -> float32 widening (benchmarks/cpu_ops.py
        gather_rows, widen). Batches under AHEAD_ROWS rows are cut from a block of rows gathered ahead
        (``_rows_ahead``)."""
        ids = self._slot_ids[slots]
        order = np.argsort(ids, kind="stable")
        if len(ids) and ids[order[0]] < 0:  # an emitted slot is always full; cheap to check, fatal to miss
            raise RuntimeError(
                f"mixing buffer: empty slot emitted (epoch {self._epoch}, round {self._round})"
            )
        a, b = self._window(start, len(slots))
        if a >= b:
            return  # the other ranks' rows
        order = order[a:b]
        out = dst[start + a - self._lo : start + b - self._lo]
        direct = self.stored or self._np_dtype is np.float32
        if direct:
            rows = out
        else:
            # a reused scratch block: a fresh 4096 x 576 bf16 result (4.7 MB) can be mmapped and page-faulted
            # anew by glibc every batch (benchmarks/cpu_ops.py scratch)
            if self._scratch is None or self._scratch.shape[0] < len(order):
                shape = (max(len(order), self._hi - self._lo), self.width)
                self._scratch = torch.empty(shape, dtype=TORCH_STORED[self._np_dtype])
            rows = self._scratch[: len(order)]
        if self.batch_size < AHEAD_ROWS:
            block, where = self._rows_ahead(ids[order])
            torch.index_select(block, 0, torch.from_numpy(where), out=rows)
        elif self.mapped:
            self.selection.gather_ids(ids[order], rows)
        else:
            torch.index_select(self._buffer_t, 0, torch.from_numpy(slots[order]), out=rows)
        if not direct:
            widen(rows, self.selection.dtype, out=out)

    def _rows_ahead(self, ids: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(block, where): stored rows of the sorted canonical ``ids`` are block[where]. Small batches pay a fixed
        cost per shard and per call in a direct gather (benchmarks/cpu_ops.py rows_ahead), so the rows of the
        round's next AHEAD_ROWS pending slots are gathered in one pass and later batches are cut from them while
        they last. A token's row never changes, so the block stays valid across refills; it is keyed by id."""
        if self._ahead_ids is not None and len(ids):
            where = np.searchsorted(self._ahead_ids, ids)
            if where[-1] < len(self._ahead_ids) and np.array_equal(self._ahead_ids[where], ids):
                return self._ahead, where
        slots = self._pending[self._pos : self._pos + max(AHEAD_ROWS, len(ids))]
        ahead = self._slot_ids[slots]
        order = np.argsort(ahead, kind="stable")
        slots, ahead = slots[order], ahead[order]
        if self._ahead is None or self._ahead.shape[0] < len(slots):
            self._ahead = torch.empty((len(slots), self.width), dtype=TORCH_STORED[self._np_dtype])
        block = self._ahead[: len(slots)]
        if self.mapped:
            self.selection.gather_ids(ahead, block)
        else:
            torch.index_select(self._buffer_t, 0, torch.from_numpy(slots), out=block)
        self._ahead_ids = ahead  # [<= AHEAD_ROWS] sorted canonical ids of block's rows
        return block, np.searchsorted(ahead, ids)

    def _emit(self, dst: torch.Tensor, start: int) -> int:
        """Emit up to batch_size - start rows of the current round (this part's into dst); returns how many."""
        if not self.shuffle:
            done = start
            for _, rows in self._take(self.batch_size - start):
                self._put(dst, done, rows)
                done += len(rows)
            return done - start
        n = min(self.batch_size - start, len(self._pending) - self._pos)
        # sorted within the batch: a monotone gather/scatter is faster, and a batch is a set anyway
        slots = np.sort(self._pending[self._pos : self._pos + n])
        self._gather(dst, start, slots)
        self._pos += n
        if self._exhausted:
            self._slot_ids[slots] = -1
            self._delta.append((slots, -1))
        else:
            self._fill(slots)
        return n

    def next_batch(self) -> tuple[torch.Tensor, int] | None:
        """(batch, rows of the whole batch) — this part's rows, float32 [batch_size / parts, d_in], or the
        stored-dtype block (pinned for a CUDA upload) — or None when the last epoch is over."""
        rows = self._hi - self._lo
        if self.stored:  # a fresh block (pinned: torch's caching host allocator recycles it)
            shape = (rows, self.width)  # [batch_size / parts, width], stored dtype
            batch = dst = torch.empty(shape, dtype=TORCH_STORED[self._np_dtype], pin_memory=self.pin)
        else:
            shape = (rows, self.d_model)  # [batch_size / parts, d_in]
            batch = dst = torch.empty(shape, dtype=torch.float32)
        filled = 0
        while filled < self.batch_size and not self._finished:
            if (self.shuffle and self._pos >= len(self._pending)) or (not self.shuffle and self._exhausted):
                if not self._start_round():
                    break
            filled += self._emit(dst, filled)
        if filled < self.batch_size and (filled == 0 or self.drop_last):
            return None
        self.tokens_emitted += filled
        return batch[: min(max(filled - self._lo, 0), rows)], filled

    def batches(self) -> Iterator[tuple[torch.Tensor, dict]]:
        """Ready batches, each with the state right after it; closes the chunk thread when done."""
        try:
            while True:
                item = self.next_batch()
                if item is None:
                    return
                yield item[0], self.snapshot()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the chunk read-ahead thread; the position is kept (restarts from _cursor)."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None
        self._piece = None

    # -- resume ------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The position right now, cheaply: scalars, the round's pending array by reference (a new array each
        round, never written in place) and the slot-id changes since the last snapshot (Position.advance
        replays them: ~64 KB per 4096-token batch instead of copying the whole slot table, 4 MB at 2^19)."""
        delta, self._delta = self._delta, []
        return {"scalars": self._scalars(), "pending": self._pending, "pos": self._pos, "delta": delta}

    def _scalars(self) -> dict:
        return {
            "epoch": self._epoch,
            "round": self._round,
            "cursor": self._cursor,
            "exhausted": self._exhausted,
            "finished": self._finished,
            "tokens_emitted": self.tokens_emitted,
        }

    def state_dict(self) -> dict:
        return {
            "epoch": self._epoch,
            "round": self._round,
            "pending": torch.from_numpy(self._pending[self._pos :].copy()),
            "cursor": self._cursor,
            "exhausted": self._exhausted,
            "finished": self._finished,
            "tokens_emitted": self.tokens_emitted,
            "slot_ids": torch.from_numpy(self._slot_ids.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a position; re-reads the rows of the buffer's tokens (grouped by shard, sorted)."""
        self.close()
        self._epoch, self._round = int(state["epoch"]), int(state["round"])
        self._pending, self._pos = np.asarray(state["pending"], np.int64).copy(), 0
        self._cursor, self._exhausted = int(state["cursor"]), bool(state["exhausted"])
        self._finished, self.tokens_emitted = bool(state["finished"]), int(state["tokens_emitted"])
        self._slot_ids = np.asarray(state["slot_ids"], np.int64).copy()
        self._delta = []
        if self._buffer is not None:
            full = np.flatnonzero(self._slot_ids >= 0)
            self.selection.read_ids(self._slot_ids[full], self._buffer, full)


def _close_prefetcher(holder: list) -> None:
    if holder and holder[0] is not None:
        holder[0].close(timeout=0.5)
