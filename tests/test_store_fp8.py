"""fp8 stores (fp8_e4m3, fp8_e5m2 with one float32 scale per token): round trip within the format's bound,
the training reader's rows equal the decoded rows exactly, verify checks the scales, harvest --dtype fp8_e4m3.

Bound used: every element's error <= 2^-(m+1) * max|x_t| of its row (m mantissa bits: 3 for e4m3, 2 for
e5m2; round to nearest), times (1 + 2^-20) for the float32 scale's own rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastsae.cli import app
from fastsae.store import (
    ShardWriter,
    StoreCorruptError,
    StoreWriteError,
    open_store,
    to_float32,
    verify_store,
)
from fastsae.store.dtypes import (
    Fp8Rows,
    encode_fp8,
    encode_fp8_torch,
    fp8_row_keys,
    fp8_shard_keys,
    fp8_table,
    pack_fp8,
    unpack_fp8,
    unpack_fp8_cast,
)
from fastsae.store.format import FP8_MANTISSA_BITS, FP8_MAX, scale_file
from fastsae.train.reader import ActivationReader

pytest_plugins = ["tests._s3_server"]  # its fixtures: s3 (the server), s3_url (a fresh prefix)
FP8 = ("fp8_e4m3", "fp8_e5m2")
D = 48


def assert_within_bound(x: np.ndarray, y: np.ndarray, dtype: str, *, stochastic: bool = True) -> None:
    """Nearest rounding: half a step of the row's largest binade; stochastic (what stores hold): a whole step."""
    rowmax = np.abs(x).max(axis=1, keepdims=True)
    bound = 2.0 ** -(FP8_MANTISSA_BITS[dtype] + (not stochastic)) * rowmax * (1 + 2**-20)
    assert (np.abs(y - x) <= bound).all(), float((np.abs(y - x) / np.maximum(rowmax, 1e-30)).max())


def hard_rows(seed: int = 0) -> np.ndarray:
    """Random rows, one huge value in some, all-zero rows, a -0 row, tiny rows (fp8 subnormals)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, D)).astype(np.float32) * rng.uniform(0.01, 50, (64, 1)).astype(np.float32)
    x[3, 7] = 3e4  # one huge value: the rest of that row goes to fp8's small (subnormal) values
    x[10, 0] = -5e5
    x[5] = 0.0
    x[6] = -0.0
    x[8] = 1e-30  # float32 scale still normal: exact
    return x


@pytest.mark.parametrize("dtype", FP8)
def test_encode_round_trip_within_bound(dtype):
    x = hard_rows()
    q, scale = encode_fp8(x, dtype)
    assert q.dtype == np.uint8 and scale.dtype == np.float32 and q.shape == x.shape
    y = to_float32(q, dtype, scale)
    assert np.isfinite(y).all()
    assert_within_bound(x, y, dtype, stochastic=False)
    assert scale[5] == 0 and scale[6] == 0 and not (y[5:7]).any()
    # the row max maps to the largest finite value (up to float32 rounding of the scale): nothing saturates
    np.testing.assert_allclose(np.abs(y).max(axis=1), np.abs(x).max(axis=1), rtol=2**-20)
    assert np.abs(to_float32(q, dtype, np.ones(len(q), np.float32))).max() == FP8_MAX[dtype]
    bad = x[:3].copy()
    bad[0, 1], bad[1, 2] = np.nan, -np.inf
    _, scale = encode_fp8(bad, dtype)  # a non-finite row's scale is NaN: the writer's finite check refuses it
    assert np.isnan(scale[:2]).all() and np.isfinite(scale[2])


@pytest.mark.parametrize("dtype", FP8)
def test_stochastic_rounding_is_unbiased_and_reproducible(dtype):
    """What stores hold: each value rounds to one of its two fp8 neighbours, so that the occurrences of a row that
    repeats (a special token's) average to it, where nearest rounding repeats one error; the same keys give the
    same codes, other keys other ones; exact values, zero rows and the row max keep their nearest code."""
    rng = np.random.default_rng(8)
    row = (rng.standard_normal(D) * rng.uniform(0.1, 30)).astype(np.float32)
    x = np.tile(row, (4000, 1))
    keys = fp8_row_keys(3, len(x), 9)  # the 4000 tokens of one sequence
    q, scale = encode_fp8(x, dtype, keys=keys)
    y = to_float32(q, dtype, scale)
    assert_within_bound(x, y, dtype)
    near = to_float32(encode_fp8(row[None], dtype)[0], dtype, encode_fp8(row[None], dtype)[1])[0]
    table = fp8_table(dtype)
    values = np.unique(table[np.isfinite(table)])
    scaled = row / scale[0]
    lo = np.array([values[values <= v].max() for v in scaled])
    hi = np.array([values[values >= v].min() for v in scaled])
    got = table[q]  # [4000, D]: each value is its lower or its upper fp8 neighbour, both taken where not exact
    assert ((got == lo) | (got == hi)).all()
    assert ((got == lo).any(0) & (got == hi).any(0) | (lo == hi)).all()
    rel = np.linalg.norm(y.mean(0) - row) / np.linalg.norm(row)
    assert rel < 0.2 * np.linalg.norm(near - row) / np.linalg.norm(row)  # unbiased: the mean is far closer
    again, _ = encode_fp8(x, dtype, keys=keys)
    other, _ = encode_fp8(x, dtype, keys=fp8_row_keys(4, len(x), 9))
    assert np.array_equal(again, q) and not np.array_equal(other, q)
    hard = hard_rows(9)
    hq, hs = encode_fp8(hard, dtype, keys=fp8_row_keys(0, len(hard), 1))
    assert_within_bound(hard, to_float32(hq, dtype, hs), dtype)
    assert not hq[5].any() and (hq[6] & 0x7F == 0).all()  # zero rows stay zero
    nq, ns = encode_fp8(hard, dtype)  # the row max is exact (it maps to the largest value): the same as nearest
    assert (np.abs(to_float32(hq, dtype, hs)).max(axis=1) == np.abs(to_float32(nq, dtype, ns)).max(axis=1)).all()


@pytest.mark.parametrize("dtype", FP8)
def test_cast_is_torchs_nearest_even(dtype):
    x = hard_rows(1)
    q, scale = encode_fp8(x, dtype)
    fp8 = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[dtype]
    t = torch.from_numpy(x) / torch.from_numpy(np.where(scale > 0, scale, 1))[:, None]
    ref = t.clamp(-FP8_MAX[dtype], FP8_MAX[dtype]).to(fp8).view(torch.uint8).numpy()
    np.testing.assert_array_equal(q, ref)


@pytest.mark.parametrize("dtype", FP8)
def test_packed_rows_decode_to_the_stored_values_exactly(dtype):
    """Codes and scales packed into one uint8 row [d + 4] decode, from numpy or from a torch tensor, bit for bit to
    what the store's own decoding gives, the hard rows (zero rows, one huge value, fp8 subnormals) included."""
    x = hard_rows(3)
    q, scale = encode_fp8(x, dtype)
    want = to_float32(q, dtype, scale)
    packed = pack_fp8(q, scale)
    assert packed.shape == (len(x), D + 4) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_fp8(packed, dtype), want)
    got = unpack_fp8(torch.from_numpy(packed), dtype)
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(want))
    cast = unpack_fp8_cast(torch.from_numpy(packed), dtype)  # the GPU's decoding, run by the CPU's kernels
    assert torch.equal(cast, torch.from_numpy(want))
    odd = pack_fp8(q[:, :5], scale)  # a row width that leaves the scale unaligned in memory
    np.testing.assert_array_equal(unpack_fp8(odd, dtype), to_float32(q[:, :5], dtype, scale))


@pytest.mark.parametrize("dtype", FP8)
@pytest.mark.parametrize("flush_denormals", [False, True])
def test_every_code_decodes_to_its_value(dtype, flush_denormals):
    """The CPU decoding (bit placement, or the table when this thread flushes denormals) gives every finite code's
    value times its scale exactly, subnormals and -0 included; the patterns the encoder never writes with a finite
    scale (NaN, inf) still decode to NaN under the NaN scale the encoder gives their rows."""
    table = fp8_table(dtype)
    codes = np.tile(np.arange(256, dtype=np.uint8), (5, 1))
    scale = np.array([1.0, 3.7e-3, 2.0**-100, 1234.5, np.nan], np.float32)
    finite = np.isfinite(table)
    torch.set_flush_denormal(flush_denormals)  # this thread's FTZ/DAZ flags, which numpy's float32 honours too
    try:
        got = unpack_fp8(pack_fp8(codes, scale), dtype)
        want = table[codes] * scale[:, None]
    finally:
        torch.set_flush_denormal(False)  # torch's default
    np.testing.assert_array_equal(got[:4, finite].view(np.uint32), want[:4, finite].view(np.uint32))
    assert np.isnan(got[4]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", FP8)
def test_packed_rows_decode_on_the_gpu_as_on_the_cpu(dtype):
    x = np.concatenate([hard_rows(4), np.random.default_rng(5).standard_normal((4099, D)).astype(np.float32)])
    q, scale = encode_fp8(x, dtype)
    packed = torch.from_numpy(pack_fp8(q, scale))
    got = unpack_fp8(packed.cuda(), dtype)
    assert got.device.type == "cuda" and torch.equal(got.cpu(), torch.from_numpy(to_float32(q, dtype, scale)))


def test_writer_stores_rows_encoded_already(tmp_path, seqs):
    """Fp8Rows (what harvest encodes on its device) are stored as they are: the same store as from float rows;
    codes or scales of the wrong kind are refused, naming the sequence and layer."""
    write_store(tmp_path / "a", "fp8_e4m3", seqs)
    with ShardWriter(tmp_path / "b", writer=0, seq=0, first_sequence=0, layers=[1], d_model=D, dtype="fp8_e4m3",
                     meta={}) as w:  # fmt: skip
        for i, x in enumerate(seqs):
            n = len(x)
            w.append(token_ids=np.arange(n), token_types=np.full(n, 4, np.uint8),
                     acts={1: Fp8Rows(*encode_fp8(x, "fp8_e4m3", keys=fp8_row_keys(i, n, 1)))},
                     source=(0, i))  # fmt: skip
        q, scale = encode_fp8(seqs[0], "fp8_e4m3")
        with pytest.raises(StoreWriteError, match=r"sequence 12: acts\[1\]: encoded fp8 rows need uint8 codes"):
            w.append(token_ids=np.arange(len(q)), token_types=np.full(len(q), 4, np.uint8),
                     acts={1: Fp8Rows(q.astype(np.int16), scale)}, source=(0, 99))  # fmt: skip
        bad = scale.copy()
        bad[2] = np.nan  # what encode_fp8_torch gives a row holding a NaN
        with pytest.raises(StoreWriteError, match=r"acts\[1\] contains NaN or inf"):
            w.append(token_ids=np.arange(len(q)), token_types=np.full(len(q), 4, np.uint8),
                     acts={1: Fp8Rows(q, bad)}, source=(0, 99))  # fmt: skip
    a, b = open_store(tmp_path / "a").shards[0], open_store(tmp_path / "b").shards[0]
    np.testing.assert_array_equal(np.asarray(a.raw_acts(1)), np.asarray(b.raw_acts(1)))
    np.testing.assert_array_equal(np.asarray(a.scales(1)), np.asarray(b.scales(1)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", FP8)
def test_encoding_on_the_gpu_equals_the_cpus(dtype):
    x = np.concatenate([hard_rows(6), np.random.default_rng(7).standard_normal((4099, D)).astype(np.float32) * 40])
    keys = fp8_row_keys(17, len(x), 9)
    for k in (None, keys):  # nearest, and the stochastic rounding stores hold
        q, scale = encode_fp8_torch(torch.from_numpy(x).cuda(), dtype, keys=k)
        want_q, want_scale = encode_fp8(x, dtype, keys=k)
        np.testing.assert_array_equal(q.cpu().numpy(), want_q)
        np.testing.assert_array_equal(scale.cpu().numpy(), want_scale)


def write_store(root, dtype: str, seqs: list[np.ndarray], layers=(1,), compression=None) -> None:
    with ShardWriter(root, writer=0, seq=0, first_sequence=0, layers=list(layers), d_model=D, dtype=dtype,
                     meta={}, compression=compression) as w:  # fmt: skip
        for i, x in enumerate(seqs):
            n = len(x)
            w.append(token_ids=np.arange(n), token_types=np.full(n, 4, np.uint8),
                     acts={L: x for L in layers}, source=(0, i))  # fmt: skip


@pytest.fixture(scope="module")
def seqs():
    rng = np.random.default_rng(2)
    out = [rng.standard_normal((int(rng.integers(5, 40)), D)).astype(np.float32) for _ in range(12)]
    out[0] = hard_rows()
    return out


@pytest.mark.parametrize("dtype, compression", [(FP8[0], None), (FP8[1], None), (FP8[0], "zstd")])
def test_store_reads_decoded_and_verifies(tmp_path, seqs, dtype, compression):
    write_store(tmp_path / "s", dtype, seqs, compression=compression)
    s = open_store(tmp_path / "s")
    sh = s.shards[0]
    assert s.dtype == dtype and sh.raw_acts(1).dtype == np.uint8
    x = np.concatenate(seqs)
    got = sh.acts(1)
    assert_within_bound(x, got, dtype)
    assert sh.attrs["fastsae"]["fp8_rounding"] == "stochastic"
    q, scale = encode_fp8(x, dtype, keys=fp8_shard_keys(0, sh.offsets, 1))
    np.testing.assert_array_equal(np.asarray(sh.raw_acts(1)), q)
    np.testing.assert_array_equal(np.asarray(sh.scales(1)), scale)
    np.testing.assert_array_equal(s.sequence(3).acts(1), got[sh.offsets[3] : sh.offsets[4]])
    rows = np.array([0, 2, 3, 40, 41, 100], dtype=np.int64)
    packed = sh.row_source(1).read(rows)  # the reader's unit: codes, then the scale's 4 bytes
    assert packed.dtype == np.uint8 and packed.shape == (len(rows), D + 4)
    np.testing.assert_array_equal(packed[:, :D], q[rows])
    np.testing.assert_array_equal(packed[:, D:].copy().view("<f4")[:, 0], scale[rows])
    np.testing.assert_array_equal(unpack_fp8(packed, dtype), got[rows])
    assert verify_store(tmp_path / "s")["ok"]
    if compression is None:  # 1 byte per element + 4 per token against bf16's 2 per element
        act = (tmp_path / "s").glob("shard-*/acts/layer_1/c/0/0")
        assert next(act).stat().st_size < 0.55 * 2 * x.size


@pytest.mark.parametrize("zero_copy, shuffle", [(None, True), (False, True), (None, False)])
def test_training_reader_gives_decoded_rows_exactly(tmp_path, seqs, zero_copy, shuffle):
    write_store(tmp_path / "s", "fp8_e4m3", seqs)
    s = open_store(tmp_path / "s")
    decoded = s.shards[0].acts(1)
    with ActivationReader(s, layer=1, batch_size=32, epochs=1, buffer_tokens=64, chunk_tokens=16,
                          drop_last=False, zero_copy=zero_copy, shuffle=shuffle) as r:  # fmt: skip
        # the buffer copy holds packed rows: d codes + a 4-byte scale, not float32 rows
        assert r.buffer_bytes == (64 * (D + 4) if zero_copy is False else 0)
        got = torch.cat(list(r)).numpy()
    assert got.dtype == np.float32 and len(got) == len(decoded)
    # a batch is a shuffled set of rows: the same multiset of rows, bit for bit
    key = lambda a: sorted(row.tobytes() for row in a)  # noqa: E731
    assert key(got) == key(decoded)


def test_remote_fp8_store_reads_as_its_local_twin(tmp_path, s3_url, seqs):
    write_store(tmp_path / "s", "fp8_e4m3", seqs)
    write_store(s3_url, "fp8_e4m3", seqs)
    local, remote = open_store(tmp_path / "s"), open_store(s3_url)
    np.testing.assert_array_equal(remote.shards[0].acts(1), local.shards[0].acts(1))
    src, rows = remote.shards[0].row_source(1), np.array([0, 3, 4, 9, 70], dtype=np.int64)
    np.testing.assert_array_equal(src.read(rows), local.shards[0].row_source(1).read(rows))
    np.testing.assert_array_equal(unpack_fp8(src.read(rows), "fp8_e4m3"), local.shards[0].acts(1)[rows])
    assert verify_store(s3_url)["ok"]


@pytest.mark.parametrize("bad", [np.nan, -1.0, np.inf])
def test_verify_flags_a_bad_scale(tmp_path, seqs, bad):
    write_store(tmp_path / "s", "fp8_e4m3", seqs)
    (shard,) = (tmp_path / "s").glob("shard-*.zarr")
    f = scale_file(shard, 1)
    sc = np.fromfile(f, dtype="<f4")
    sc[9] = bad
    sc.tofile(f)  # nothing else updated: the scale check names it (before the crc would)
    with pytest.raises(StoreCorruptError, match=r"layer_1_scale: scale .* at token 9 is not finite and >= 0"):
        verify_store(tmp_path / "s")


def test_verify_flags_values_under_a_zero_scale(tmp_path, seqs):
    write_store(tmp_path / "s", "fp8_e4m3", seqs)
    (shard,) = (tmp_path / "s").glob("shard-*.zarr")
    f = scale_file(shard, 1)
    sc = np.fromfile(f, dtype="<f4")
    sc[2] = 0.0  # a non-zero row now claims scale 0
    sc.tofile(f)
    with pytest.raises(StoreCorruptError, match="token 2 has scale 0 but non-zero values|crc32c"):
        verify_store(tmp_path / "s")


def test_harvest_cli_fp8(tmp_path):
    from tests._tiny_models import save_tiny_model, tiny_tokenizer
    from tests.test_harvest_store import write_chats

    model = save_tiny_model("llama", tmp_path / "llama", tiny_tokenizer("llama"))
    chats = write_chats(tmp_path / "chats.jsonl")
    base = ["harvest", "--model", str(model), "--data", str(chats), "--layers", "1", "--no-progress",
            "--device", "cpu", "--limit", "4"]  # fmt: skip
    runner = CliRunner()
    for dtype in ("float32", "fp8_e4m3"):
        res = runner.invoke(app, [*base, "--out", str(tmp_path / dtype), "--dtype", dtype])
        assert res.exit_code == 0, res.output
    ref, s = open_store(tmp_path / "float32"), open_store(tmp_path / "fp8_e4m3")
    assert s.dtype == "fp8_e4m3" and s.num_tokens == ref.num_tokens
    x = np.concatenate([sh.acts(1) for sh in ref.shards])
    y = np.concatenate([sh.acts(1) for sh in s.shards])
    assert_within_bound(x, y, "fp8_e4m3")
    # harvest encodes on the model's device before the transfer, rounding as ShardWriter does: the same codes
    keys = torch.cat([fp8_shard_keys(sh.first_sequence, sh.offsets, 1) for sh in ref.shards])
    q, scale = encode_fp8(x, "fp8_e4m3", keys=keys)
    np.testing.assert_array_equal(np.concatenate([np.asarray(sh.raw_acts(1)) for sh in s.shards]), q)
    np.testing.assert_array_equal(np.concatenate([np.asarray(sh.scales(1)) for sh in s.shards]), scale)
    assert verify_store(tmp_path / "fp8_e4m3")["ok"]
    # --fp8-rounding nearest: round to nearest even, recorded in each shard and in the store's identity
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "near"), "--dtype", "fp8_e4m3", "--fp8-rounding",
                              "nearest"])  # fmt: skip
    assert res.exit_code == 0, res.output
    near = open_store(tmp_path / "near")
    assert near.meta["identity"]["fp8_rounding"] == "nearest"
    assert all(sh.attrs["fastsae"]["fp8_rounding"] == "nearest" for sh in near.shards)
    q, _ = encode_fp8(x, "fp8_e4m3")
    np.testing.assert_array_equal(np.concatenate([np.asarray(sh.raw_acts(1)) for sh in near.shards]), q)
    assert_within_bound(x, np.concatenate([sh.acts(1) for sh in near.shards]), "fp8_e4m3", stochastic=False)


def test_harvest_refuses_an_unknown_dtype():
    from fastsae.harvest.config import MODEL_DTYPES, HarvestConfig, HarvestConfigError

    assert "fp8_e4m3" not in MODEL_DTYPES  # the forward pass never runs in fp8
    with pytest.raises(HarvestConfigError, match="fp8_e4m3, fp8_e5m2"):
        HarvestConfig(out="x", dtype="fp8")


@pytest.fixture(scope="module")
def smollm2():
    import os

    from fastsae.lm import GGUF_ENV, load_model
    from tests.test_harvest_smollm2 import LOCAL_GGUF

    if not os.environ.get(GGUF_ENV) and LOCAL_GGUF.is_file():
        os.environ[GGUF_ENV] = str(LOCAL_GGUF)
    return load_model("smollm2-135m-instruct", dtype=torch.float32, device="cpu")


@pytest.mark.slow
def test_real_smollm2_rows_round_trip(smollm2, tmp_path):
    """4 demo chats through SmolLM2-135M at layer 9, harvested as float32 and as fp8_e4m3 (same model load):
    every fp8 row is within the bound of its float32 row, special tokens (the largest norms) included."""
    from fastsae.harvest.config import HarvestConfig
    from fastsae.harvest.meta import DEMO_DATA
    from fastsae.harvest.runner import run_harvest

    stores = {}
    for dtype in ("float32", "fp8_e4m3"):
        cfg = HarvestConfig(out=str(tmp_path / dtype), data=(str(DEMO_DATA),), limit=4, layers=(9,),
                            dtype=dtype, progress=False)  # fmt: skip
        run_harvest(cfg, loaded=smollm2)
        stores[dtype] = open_store(cfg.out)
    x = np.concatenate([sh.acts(9) for sh in stores["float32"].shards])
    y = np.concatenate([sh.acts(9) for sh in stores["fp8_e4m3"].shards])
    types = np.concatenate([sh.token_types for sh in stores["fp8_e4m3"].shards])
    assert x.shape == y.shape and (types == 0).any()
    assert_within_bound(x, y, "fp8_e4m3")
    assert verify_store(tmp_path / "fp8_e4m3")["ok"]


def test_an_sae_trained_on_fp8_equals_one_trained_on_the_decoded_rows(tmp_path, seqs):
    """Training reads an fp8 store's rows packed with their scales and decodes them in the batch: the SAE is bit
    for bit the one trained (same seed) on a float32 store holding the decoded rows."""
    from fastsae.saes.saelens import load_sae
    from tests._worlds import tiny_train

    write_store(tmp_path / "fp8", "fp8_e4m3", seqs)
    codes = (encode_fp8(x, "fp8_e4m3", keys=fp8_row_keys(i, len(x), 1)) for i, x in enumerate(seqs))
    decoded = [to_float32(q, "fp8_e4m3", sc) for q, sc in codes]
    write_store(tmp_path / "f32", "float32", decoded)
    kw = dict(layer=1, batch_size=16, tokens=16 * 12, buffer_tokens=64, chunk_tokens=16, init_sample_tokens=128,
              eval_every=6, normalize_activations=True)  # fmt: skip
    (a,) = tiny_train(tmp_path / "fp8", tmp_path / "sae_fp8", **kw)
    (b,) = tiny_train(tmp_path / "f32", tmp_path / "sae_f32", **kw)
    sa, sb = load_sae(a), load_sae(b)
    for name, p in sa.state_dict().items():
        assert torch.equal(p, sb.state_dict()[name]), name
