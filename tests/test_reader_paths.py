"""The mixing reader's read paths: rows read in place (zero-copy) or copied into the buffer, compressed stores,
stored-dtype and CUDA batches, the readahead hints, small batches cut from rows gathered ahead; for float32,
bfloat16 and fp8 stores (whose rows travel packed with their scales). Each path must emit exactly the batches of
the others."""

from __future__ import annotations

import collections
import mmap

import numpy as np
import pytest
import torch

from fastsae.store.dtypes import unpack_fp8
from fastsae.train.reader import ReaderError
from tests._reader_stores import all_tags, build_store, make


@pytest.fixture(scope="module", params=["float32", "bfloat16", "fp8_e4m3"])
def store(request, tmp_path_factory):
    return build_store(tmp_path_factory.mktemp(f"store_{request.param}"), dtype=request.param)


def test_compressed_store(tmp_path):
    st = build_store(tmp_path, dtype="bfloat16", shards=2, compression="zstd")
    got = all_tags(make(st, epochs=1, drop_last=False))
    np.testing.assert_array_equal(np.sort(got), np.arange(st.num_tokens))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu(store):
    cpu = [b for _, b in zip(range(5), make(store), strict=False)]
    gpu = [b for _, b in zip(range(5), make(store, device="cuda"), strict=False)]
    for a, b in zip(cpu, gpu, strict=True):
        assert b.device.type == "cuda" and b.dtype == torch.float32 and torch.equal(a, b.cpu())


@pytest.mark.parametrize("shuffle", [True, False])
def test_undecoded_batches_are_the_stored_values(store, shuffle):
    decoded = make(store, epochs=1, drop_last=False, shuffle=shuffle)
    stored = make(store, epochs=1, drop_last=False, shuffle=shuffle, decode=False)
    want = {"float32": torch.float32, "bfloat16": torch.bfloat16, "fp8_e4m3": torch.uint8}[store.dtype]
    n = 0
    for a, b in zip(decoded, stored, strict=True):
        assert b.dtype == want and len(b) == len(a)
        if store.dtype == "fp8_e4m3":  # packed rows: d codes, then the row's float32 scale
            assert b.shape[1] == a.shape[1] + 4
            assert torch.equal(unpack_fp8(b, store.dtype), a)
        else:
            assert torch.equal(b.float(), a)  # same tokens, same order; widening is exact
        n += len(b)
    assert n == store.num_tokens


@pytest.mark.parametrize("token_types", ["all", "assistant"])
def test_zero_copy_emits_what_the_buffer_copy_emits(store, token_types):
    """Rows read in place from the memmaps (the default for an uncompressed store) and rows copied into the
    mixing buffer give the same batches, row for row, through epochs and a resume."""
    kw = dict(epochs=2, batch_size=24, drop_last=False, token_types=token_types)
    mapped, copied = make(store, **kw), make(store, zero_copy=False, **kw)
    assert mapped.zero_copy and not copied.zero_copy
    for i, (a, b) in enumerate(zip(mapped, copied, strict=True)):
        assert torch.equal(a, b), i
        if i == 5:
            state = mapped.state_dict()
            resumed = make(store, **kw)
            resumed.load_state_dict(state)
            rest = list(resumed)
    assert torch.equal(torch.cat(rest), torch.cat(list(make(store, **kw))[6:]))


@pytest.mark.parametrize("zero_copy", [True, False])
def test_readahead_hints_cover_every_chunk_once_per_epoch(store, monkeypatch, zero_copy):
    """The chunk thread asks for each chunk's span of the memmap (madvise WILLNEED, page-aligned) once per epoch,
    before paging it in; the hints change no batch."""
    kw = dict(epochs=2, drop_last=False, token_types="assistant", zero_copy=zero_copy)
    plain = torch.cat(list(make(store, **kw)))
    reader = make(store, **kw)
    sel = reader.selection
    calls = []

    class Recorder:
        def __init__(self, shard):
            self.shard = shard

        def madvise(self, option, start, length):
            calls.append((self.shard, option, start, length))

    for s in range(len(sel.rows)):
        monkeypatch.setattr(sel.raw(s), "_mmap", Recorder(s))
    assert torch.equal(torch.cat(list(reader)), plain)
    want = collections.Counter()  # (shard, start, length) of each chunk's span, starting on a page boundary
    for c in range(sel.num_chunks):
        s, raw = int(sel.chunk_shard[c]), sel.raw(int(sel.chunk_shard[c]))
        base = int(sel.shard_start[s])
        local = sel.rows[s][int(sel.chunk_start[c]) - base : int(sel.chunk_stop[c]) - base]
        lo, hi = int(local[0]) * raw.strides[0], (int(local[-1]) + 1) * raw.strides[0]
        want[(s, lo - lo % mmap.PAGESIZE, hi - lo + lo % mmap.PAGESIZE)] += 2  # once per epoch
    assert all(option == mmap.MADV_WILLNEED for _, option, _, _ in calls)
    assert collections.Counter((s, start, length) for s, _, start, length in calls) == want


@pytest.mark.parametrize("ahead", [16, 40])
@pytest.mark.parametrize("zero_copy", [True, False])
def test_small_batches_cut_from_rows_gathered_ahead_equal_direct_gathers(
    store, monkeypatch, ahead, zero_copy
):
    """Batches under AHEAD_ROWS are cut from a block of the round's next rows gathered in one pass (a block smaller
    than two batches, or several batches long); they equal per-batch gathers, through epochs, rounds and a resume."""
    from fastsae.train import mixing as train_mixing

    kw = dict(epochs=2, batch_size=12, drop_last=False, token_types="-special", zero_copy=zero_copy)
    monkeypatch.setattr(train_mixing, "AHEAD_ROWS", 1)  # batch_size >= 1: every batch gathered directly
    direct = list(make(store, **kw))
    monkeypatch.setattr(train_mixing, "AHEAD_ROWS", ahead)
    reader = make(store, **kw)
    got = [b for _, b in zip(range(9), reader, strict=False)]
    resumed = make(store, **kw)
    resumed.load_state_dict(reader.state_dict())
    got += list(resumed)
    assert len(got) == len(direct)
    for i, (a, b) in enumerate(zip(got, direct, strict=True)):
        assert torch.equal(a, b), i


def test_zero_copy_needs_an_uncompressed_store(tmp_path):
    st = build_store(tmp_path, dtype="bfloat16", shards=1, compression="zstd")
    assert not make(st).zero_copy  # auto: the buffer copy
    with pytest.raises(ReaderError, match="uncompressed"):
        make(st, zero_copy=True)


@pytest.mark.parametrize(
    "kw",
    [
        dict(batch_size=24),  # rows gathered ahead (batch < AHEAD_ROWS)
        dict(batch_size=24, zero_copy=False),
        dict(batch_size=24, shuffle=False),
        dict(batch_size=24, decode=False),
    ],
    ids=["mapped", "copied", "sequential", "stored"],
)
def test_parts_of_each_batch_are_the_batch(store, monkeypatch, kw):
    """Data-parallel ranks read only their part of each batch: the parts, side by side, are the whole batch,
    through epochs and the last short batch; every part's state is the whole batch's and resumes any part."""
    from fastsae.train import mixing as train_mixing

    kw = dict(kw, epochs=2, drop_last=False, token_types="-special")
    for ahead in (1, 4096):  # direct gathers, and small batches cut from a block gathered ahead
        monkeypatch.setattr(train_mixing, "AHEAD_ROWS", ahead)
        whole = list(make(store, **kw))
        parts = [make(store, part=(r, 3), **kw) for r in range(3)]
        got = [[b for _, b in zip(range(4), p, strict=False)] for p in parts]
        states = [p.state_dict() for p in parts]
        assert all(_same_state(states[0], s) for s in states[1:])
        resumed = make(store, part=(1, 3), **kw)
        resumed.load_state_dict(states[0])
        got[1] += list(resumed)
        for r in (0, 2):
            got[r] += list(parts[r])
        assert len(whole) == len(got[0]) == len(got[1]) == len(got[2])
        for i, batch in enumerate(whole):
            assert torch.equal(torch.cat([got[r][i] for r in range(3)]), batch), (ahead, i)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_a_part_must_divide_the_batch(store):
    with pytest.raises(ReaderError, match="part 3 of 3"):
        make(store, part=(3, 3))
    with pytest.raises(ReaderError, match="batch_size 16 % parts"):
        make(store, part=(0, 3))
