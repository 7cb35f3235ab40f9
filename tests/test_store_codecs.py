"""The one parser of the acts arrays' codecs (store/shardfile.py acts_chunks): fastsae's layout in each
compression mode is read as (rows_per_chunk, n_chunks), anything else is refused (None), never an exception."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from fastsae.store.shardfile import acts_chunks, memmappable, zstd_chunks
from tests.test_store import _no_fsync, write_store  # noqa: F401  (autouse fixture)


def _acts_meta(tmp_path, compression):
    write_store(tmp_path, [[40, 30]], layers=(2,), d_model=8, compression=compression, rows_per_chunk=16)
    (shard,) = tmp_path.glob("shard-*.zarr")
    return json.loads((shard / "acts" / "layer_2" / "zarr.json").read_text())


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_written_layout_is_read_in_its_mode_only(tmp_path, compression):
    meta = _acts_meta(tmp_path, compression)
    f32 = np.dtype(np.float32)
    assert acts_chunks(meta, (70, 8), f32, compression=compression) == (16, 5)
    other = "zstd" if compression is None else None
    assert acts_chunks(meta, (70, 8), f32, compression=other) is None
    assert (memmappable if compression is None else zstd_chunks)(meta, (70, 8), f32) == (16, 5)
    assert acts_chunks(meta, (70, 8), np.dtype(np.float16), compression=compression) is None
    assert acts_chunks(meta, (70, 9), f32, compression=compression) is None  # another row width
    assert acts_chunks(meta, (81, 8), f32, compression=compression) is None  # more rows than the shard holds


@pytest.mark.parametrize("compression", [None, "zstd"])
@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["codecs"][0]["configuration"]["codecs"][0].update(configuration={"endian": "big"}),
        lambda m: m["codecs"][0]["configuration"].update(index_location="start"),
        lambda m: m["codecs"][0]["configuration"]["index_codecs"].pop(),
        lambda m: m["codecs"][0]["configuration"].update(chunk_shape=[0, 8]),
        lambda m: m["codecs"][0]["configuration"].update(chunk_shape=[16.0, 8]),
        lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[72, 8]),
        lambda m: m["chunk_key_encoding"].update(name="v2"),
        lambda m: m.pop("chunk_grid"),
        lambda m: m.update(codecs="bytes"),
    ],
)
def test_other_layouts_are_refused(tmp_path, compression, edit):
    meta = copy.deepcopy(_acts_meta(tmp_path, compression))
    edit(meta)
    assert acts_chunks(meta, (70, 8), np.dtype(np.float32), compression=compression) is None
