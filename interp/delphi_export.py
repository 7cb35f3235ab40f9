"""`fastsae features --delphi`: every firing of the pass in delphi's latent-cache layout, so that delphi's
LatentDataset (and its explainers and scorers) read it unchanged.

delphi's LatentCache.save_splits writes, per module (hookpoint), `<module>/<start>_<end>.safetensors` for
latent ranges split evenly over d_sae (`end` inclusive), each holding
- `locations` [n, 3] (row of `tokens`, position in the row, latent − start), uint16 when every row and
  latent offset is < 2**16, else uint32;
- `activations` [n] float16;
- `tokens` [rows, ctx_len] int64: the token ids the cache was built from;
and `<module>/config.json`: its CacheConfig plus `model_name`. delphi's token rows are fixed-length chunks
of a token stream, so the sequences read are laid end to end in read order and cut into rows of
CTX_LEN (the last one padded); config.json's `fastsae` entry maps each store sequence to its first
position in that stream. Firings are appended to per-split temporary files during the pass, in stream
order (delphi's windows need each latent's locations sorted), so memory stays bounded; at the end
one split at a time is read back and saved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastsae.atomic import atomic_path, write_json_atomic

CTX_LEN = 256  # delphi's default cache_ctx_len; a multiple of its example_ctx_len (32)
N_SPLITS = 5  # delphi's default n_splits
FOLDER = "delphi"


def split_bounds(d_sae: int, n_splits: int) -> list[tuple[int, int]]:
    """delphi's _generate_split_indices: linspace boundaries, `end` inclusive."""
    b = torch.linspace(0, d_sae, steps=n_splits + 1).long().tolist()
    return [(b[i], b[i + 1] - 1) for i in range(n_splits) if b[i + 1] > b[i]]


class DelphiWriter:
    def __init__(self, out: Path, *, module: str, d_sae: int, seqs: np.ndarray, lengths: np.ndarray, device):
        self.dir = Path(out) / FOLDER / module
        self.dir.mkdir(parents=True, exist_ok=True)
        self.module = module
        n_splits = max(N_SPLITS, -(-d_sae // 2**16))  # a split's latent offsets must fit in 16 bits
        self.bounds = split_bounds(d_sae, n_splits)
        self.edges = torch.tensor([a for a, _ in self.bounds][1:], dtype=torch.int64, device=device)
        self.seqs = torch.as_tensor(seqs, dtype=torch.int64, device=device)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.starts_np, self.n_stream = starts, int(np.sum(lengths))
        self.starts = torch.as_tensor(starts, device=device)
        self.tmp = [
            {k: open(self.dir / f".{a}_{e}.{k}.tmp", "wb") for k in ("pos", "lat", "act")}
            for a, e in self.bounds
        ]

    def add(
        self, tok_seq: torch.Tensor, tok_pos: torch.Tensor, feat: torch.Tensor, val: torch.Tensor
    ) -> None:
        """Firings in token order (seq, pos of each, its feature, its value)."""
        if feat.numel() == 0:
            return
        stream = self.starts[torch.searchsorted(self.seqs, tok_seq)] + tok_pos
        split = torch.bucketize(feat, self.edges, right=True)
        order = torch.argsort(split, stable=True)  # keeps token order inside each split
        counts = torch.bincount(split, minlength=len(self.bounds)).tolist()
        stream, feat, val, split = stream[order].cpu(), feat[order].cpu(), val[order].cpu(), split[order]
        a = 0
        for i, n in enumerate(counts):
            if n:
                f = self.tmp[i]
                f["pos"].write(stream[a : a + n].numpy().tobytes())
                f["lat"].write((feat[a : a + n] - self.bounds[i][0]).to(torch.int32).numpy().tobytes())
                f["act"].write(val[a : a + n].to(torch.float16).numpy().tobytes())
            a += n

    def tokens(self, store, seqs: np.ndarray, pad_id: int) -> np.ndarray:
        rows = -(-self.n_stream // CTX_LEN)
        flat = np.full(rows * CTX_LEN, pad_id, np.int64)
        for s, start in zip(seqs, self.starts_np, strict=True):
            ids = store.sequence(int(s)).token_ids
            flat[start : start + len(ids)] = ids
        return flat.reshape(rows, CTX_LEN)

    def finish(self, store, seqs: np.ndarray, *, pad_id: int, model_name: str, extra: dict) -> Path:
        from safetensors.numpy import save_file

        tokens = self.tokens(store, seqs, pad_id)
        for (a, e), f in zip(self.bounds, self.tmp, strict=True):
            for fh in f.values():
                fh.close()
            pos = np.fromfile(f["pos"].name, np.int64)
            lat = np.fromfile(f["lat"].name, np.int32)
            act = np.fromfile(f["act"].name, np.float16)
            loc = np.stack([pos // CTX_LEN, pos % CTX_LEN, lat], axis=1)
            small = len(loc) == 0 or (loc[:, 2].max() < 2**16 and loc[:, 0].max() < 2**16)
            loc = loc.astype(np.uint16 if small else np.uint32)
            with atomic_path(self.dir / f"{a}_{e}.safetensors") as tmp:
                save_file({"locations": loc, "activations": act, "tokens": tokens}, str(tmp))
                tmp.chmod(0o644)  # safetensors creates it 0600
            for fh in f.values():
                Path(fh.name).unlink()
        config = {
            "dataset_repo": str(store.path), "dataset_split": "fastsae features", "dataset_name": "",
            "dataset_column": "", "batch_size": 1, "cache_ctx_len": CTX_LEN, "n_tokens": self.n_stream,
            "n_splits": len(self.bounds), "model_name": model_name,
            "fastsae": {**extra, "sequences": [int(s) for s in seqs], "stream_starts": self.starts_np.tolist()},
        }  # fmt: skip
        write_json_atomic(self.dir / "config.json", config)
        return self.dir

    def abort(self) -> None:
        for f in self.tmp:
            for fh in f.values():
                fh.close()
                Path(fh.name).unlink(missing_ok=True)
