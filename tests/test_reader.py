"""The mixing reader (train/reader.py): token order, epochs, hold-out, resume, RAM bound, threads, bad input.
The read paths (zero-copy or buffer copy, stored dtype, CUDA, readahead, small batches) are in test_reader_paths.py;
the stores are tests/_reader_stores.py's."""

from __future__ import annotations

import os
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from fastsae.store import StoreNotFoundError, TokenType, open_store
from fastsae.train.mixing import Mixer
from fastsae.train.reader import (
    EmptySelectionError,
    LayerNotFoundError,
    ResumeMismatchError,
    TokenTypeSpecError,
    parse_token_types,
)
from fastsae.train.selection import TokenSelection
from tests._reader_stores import D, all_tags, build_store, expected_tokens, make, tags


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def store(request, tmp_path_factory):
    return build_store(tmp_path_factory.mktemp(f"store_{request.param}"), dtype=request.param)


def test_exactly_once_per_epoch_with_carry(store):
    r = make(store, epochs=3, batch_size=23, drop_last=False)
    n = r.tokens_per_epoch
    assert n == store.num_tokens
    got = all_tags(r)
    assert len(got) == 3 * n
    for e in range(3):  # the emitted stream is epoch 0's permutation, then epoch 1's, ...
        np.testing.assert_array_equal(np.sort(got[e * n : (e + 1) * n]), np.arange(n))
    assert not np.array_equal(got[:n], got[n : 2 * n])  # reshuffled per epoch
    batch = next(iter(make(store)))
    assert batch.dtype == torch.float32 and batch.shape == (16, D)
    assert torch.all(batch[:, 3] == 3)  # the requested layer


def test_tiny_store(tmp_path):
    st = build_store(tmp_path, shards=1, seqs_per_shard=1)
    n = st.num_tokens
    got = all_tags(make(st, epochs=3, batch_size=2, drop_last=False))
    assert len(got) == 3 * n and all(sorted(got[e * n : (e + 1) * n]) == list(range(n)) for e in range(3))


def test_exact_batch_size_and_drop_last(store):
    r = make(store, epochs=1, batch_size=50)
    sizes = [len(b) for b in r]
    assert set(sizes) == {50} and len(sizes) == store.num_tokens // 50
    sizes = [len(b) for b in make(store, epochs=1, batch_size=50, drop_last=False)]
    assert sum(sizes) == store.num_tokens and sizes[-1] == store.num_tokens % 50


def test_sequential_mode_is_store_order(store):
    got = all_tags(make(store, shuffle=False, epochs=2, batch_size=7, drop_last=False))
    n = store.num_tokens
    np.testing.assert_array_equal(got, np.concatenate([np.arange(n), np.arange(n)]))


def test_token_type_filter(store):
    keep = parse_token_types("assistant,user")
    got = all_tags(make(store, token_types=keep, epochs=1, drop_last=False))
    np.testing.assert_array_equal(np.sort(got), expected_tokens(store, keep))
    got = all_tags(make(store, token_types="-special", epochs=1, drop_last=False))
    np.testing.assert_array_equal(np.sort(got), expected_tokens(store, set(TokenType) - {TokenType.SPECIAL}))


def test_parse_token_types():
    assert parse_token_types("all") == frozenset(TokenType)
    assert parse_token_types("-special") == frozenset(TokenType) - {TokenType.SPECIAL}
    assert parse_token_types("Assistant, user") == {TokenType.ASSISTANT, TokenType.USER}
    assert parse_token_types("all,-special,-template") == frozenset(TokenType) - {
        TokenType.SPECIAL,
        TokenType.TEMPLATE,
    }
    with pytest.raises(TokenTypeSpecError, match="unknown token type 'bot'.*valid: all, special"):
        parse_token_types("assistant,bot")
    with pytest.raises(ValueError, match="selects no token type"):
        parse_token_types("assistant,-assistant")
    with pytest.raises(ValueError, match="empty"):
        parse_token_types("")


def test_holdout_disjoint_deterministic(store):
    r = make(store, holdout=0.2, epochs=1, drop_last=False)
    held = r.holdout_sequences
    assert len(held) == round(0.2 * store.num_sequences)
    np.testing.assert_array_equal(held, make(store, holdout=0.2).holdout_sequences)
    assert not np.array_equal(held, make(store, holdout=0.2, seed=2).holdout_sequences)
    got = all_tags(r)
    np.testing.assert_array_equal(np.sort(got), expected_tokens(store, holdout=held))
    seqs = list(r.iter_holdout())
    assert [s.index for s in seqs] == list(held)
    for s in seqs:
        a, b = store.seq_offsets[s.index], store.seq_offsets[s.index + 1]
        np.testing.assert_array_equal(tags(s.acts), np.arange(a, b))
        np.testing.assert_array_equal(s.token_types, store.sequence(s.index).token_types)
        assert s.keep.all() and s.acts.dtype == torch.float32
    assert len(make(store, holdout=1e-6).holdout_sequences) == 1  # at least one sequence
    assert len(make(store, holdout_sequences=5).holdout_sequences) == 5
    capped = list(r.iter_holdout(max_sequences=2))
    assert [s.index for s in capped] == list(held[:2])
    capped = list(r.iter_holdout(max_tokens=10))
    assert sum(len(s.acts) for s in capped) == 10


def test_seeds(store):
    a = all_tags(make(store, seed=5), 6)
    np.testing.assert_array_equal(a, all_tags(make(store, seed=5), 6))
    assert not np.array_equal(a, all_tags(make(store, seed=6), 6))


def test_shuffle_quality(tmp_path):
    st = build_store(tmp_path, shards=4, seqs_per_shard=60)
    r = make(st, buffer_tokens=512, chunk_tokens=32, batch_size=64, epochs=1)
    got = all_tags(r)
    rank_corr = np.corrcoef(np.arange(len(got)), got)[0, 1]  # tags are ranks in store order
    assert abs(rank_corr) < 0.5, rank_corr
    # a batch mixes many chunks: well over buffer/chunk/4 distinct chunks of 32 tokens per batch
    first = got[:64] // 32
    assert len(np.unique(first)) > 512 // 32 // 4


@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_equivalence(store, shuffle):
    kw = dict(epochs=3, batch_size=19, shuffle=shuffle, holdout=0.1, token_types="-special")
    full = [b.clone() for b in make(store, **kw)]
    for k in (0, 1, 5, len(full) // 3 + 2, len(full) - 1):
        r = make(store, **kw)
        head = [next(r) for _ in range(k)]
        state = r.state_dict()
        r.close()
        r2 = make(store, **kw)
        r2.load_state_dict(state)
        rest = list(r2)
        assert len(head) + len(rest) == len(full)
        for x, y in zip(head + rest, full, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("shuffle", [True, False])
def test_position_replays_the_mixer_state(store, shuffle):
    """The consumer-side Position, advanced by each batch's snapshot (slot-id changes only), equals the
    mixer's full state after every batch: epoch starts, refills, the drain at each epoch's end."""
    from fastsae.train.position import Position

    r = make(store, epochs=3, batch_size=23, shuffle=shuffle, buffer_tokens=64, drop_last=False)
    mixer = r._mixer
    pos = Position(mixer.state_dict())
    n = 0
    for _, snap in mixer.batches():
        pos.advance(snap)
        want, got = mixer.state_dict(), pos.state_dict()
        assert want.keys() == got.keys()
        for k in want:
            assert torch.equal(torch.as_tensor(want[k]), torch.as_tensor(got[k])), (n, k)
        n += 1
    assert n > 3 * r.tokens_per_epoch // 23 - 1


def test_close_then_continue(store):
    """close() stops the threads wherever they ran ahead; iterating again continues exactly."""
    kw = dict(epochs=2, batch_size=13)
    full = [b.clone() for b in make(store, **kw)]
    r = make(store, **kw)
    got = []
    for k in (1, 3, 7, 2, 10_000):
        got += [b.clone() for _, b in zip(range(k), r, strict=False)]
        r.close()
    assert len(got) == len(full) and all(torch.equal(x, y) for x, y in zip(got, full, strict=True))
    assert r.tokens_emitted == len(full) * 13 and list(r) == []


def test_resume_through_torch_save(store, tmp_path):
    r = make(store)
    for _ in range(7):
        next(r)
    torch.save(r.state_dict(), tmp_path / "s.pt")
    want = [next(r) for _ in range(5)]
    r.close()
    r2 = make(store)
    r2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert all(torch.equal(next(r2), w) for w in want)
    r2.close()
    with pytest.raises(ResumeMismatchError, match="seed"):
        make(store, seed=9).load_state_dict(r.state_dict())


@pytest.mark.parametrize("zero_copy", [True, False])
@pytest.mark.parametrize("token_types", ["all", "-special"])  # contiguous memmap views / gathers
def test_ram_bound(store, monkeypatch, token_types, zero_copy):
    """Arrays the reader allocates (buffer, chunks read ahead, batches made ahead and not yet
    consumed) stay within 1.2x buffer_tokens * d * 4 bytes, however many epochs go through it."""
    live = {"bytes": 0, "peak": 0}
    lock = threading.Lock()

    def track(arr, nbytes):
        with lock:
            live["bytes"] += nbytes
            live["peak"] = max(live["peak"], live["bytes"])
        weakref.finalize(arr, sub, nbytes)

    def sub(n):
        with lock:
            live["bytes"] -= n

    read_raw, next_batch = TokenSelection.read_raw, Mixer.next_batch

    def tracked_read(self, shard, rows):
        out = read_raw(self, shard, rows)
        if out.base is None:  # a view of the memmap allocates nothing
            track(out, out.nbytes)
        return out

    def tracked_batch(self):
        out = next_batch(self)
        if out is not None:
            track(out[0], out[0].untyped_storage().nbytes())
        return out

    monkeypatch.setattr(TokenSelection, "read_raw", tracked_read)
    monkeypatch.setattr(Mixer, "next_batch", tracked_batch)
    r = make(
        store,
        buffer_tokens=512,
        chunk_tokens=8,
        batch_size=8,
        epochs=3,
        prefetch=2,
        token_types=token_types,
        zero_copy=zero_copy,
    )
    itemsize = 2 if store.dtype == "bfloat16" else 4
    assert r.buffer_bytes == (0 if zero_copy else 512 * D * itemsize)
    for _ in r:
        pass
    gather_tmp = 8 * D * itemsize  # buffer[slots] before the decode
    assert r.buffer_bytes + gather_tmp + live["peak"] <= 1.2 * 512 * D * 4, live


@pytest.mark.parametrize("zero_copy", [True, False])
def test_thread_error_propagates(store, monkeypatch, zero_copy):
    name = "touch_chunk" if zero_copy else "read_chunk"  # what the chunk thread calls
    orig = getattr(TokenSelection, name)
    calls = {"n": 0}

    def failing(self, chunk, skip=0):
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError("disk on fire")
        return orig(self, chunk, skip)

    monkeypatch.setattr(TokenSelection, name, failing)
    r = make(store, zero_copy=zero_copy)
    with pytest.raises(OSError, match="disk on fire"):
        for _ in r:
            pass


def test_early_stop_does_not_hang(store):
    r = make(store, buffer_tokens=32, chunk_tokens=4, prefetch=1)
    next(r)
    thread = r._batches._thread
    time.sleep(0.1)  # the thread is now blocked on the full queue
    t0 = time.perf_counter()
    r.close()
    assert not thread.is_alive() and time.perf_counter() - t0 < 2
    with make(store) as r2:  # context manager
        next(r2)
    # an abandoned reader does not keep its thread alive
    r3 = make(store)
    next(r3)
    thread = r3._batches._thread
    del r3
    thread.join(2)
    assert not thread.is_alive()


def test_bad_input(tmp_path, store):
    with pytest.raises(StoreNotFoundError):
        make(tmp_path / "nope")
    with pytest.raises(LayerNotFoundError, match=r"layer 7 is not in the store .* layers \[1, 3\]"):
        make(store, layer=7)
    assert issubclass(LayerNotFoundError, ValueError)
    only_special = [t for t in TokenType if t != TokenType.SPECIAL]
    st = build_store(tmp_path / "s", shards=1, seqs_per_shard=3)
    types = np.unique(np.concatenate([np.asarray(sh.token_types) for sh in st.shards]))
    missing = [t for t in TokenType if int(t) not in types]
    if missing:
        with pytest.raises(EmptySelectionError, match="no training tokens"):
            make(st, token_types=frozenset(missing))
    assert only_special


def test_damaged_store_error_is_the_stores(tmp_path):
    from fastsae.store import StoreCorruptError
    from fastsae.store.format import act_shard_file

    st = build_store(tmp_path, dtype="bfloat16")
    f = act_shard_file(st.shards[1].path, 3)
    os.truncate(f, f.stat().st_size // 2)
    with pytest.raises(StoreCorruptError, match="truncated"):
        make(open_store(tmp_path))
    make(open_store(tmp_path), layer=1).close()  # the other layer is intact
