"""A store harvested today is byte-identical to one harvested before harvest moved onto fastsae.lm.

tests/data/harvest_golden.json describes every file of two small tiny-model stores (a conversation
store and a block store), harvested on CPU with one thread: the sha256 of each data file (its bytes)
and array zarr.json (its JSON, keys sorted), which must be identical, and the content of the files
that carry the store's metadata (store.json, each shard's group zarr.json), the temporary root
written as `<ROOT>`. Every value the golden holds must be the same, except the timestamps and the
format's schema_version (and the crc of attributes holding a timestamp); keys added since (where the tokenizer loads back from, the store's own
checksums) are allowed, and so are files added since (the store's writer records).

The golden records the library versions and CPU it was made with: float bytes are only comparable
there, so elsewhere the test skips and says how to regenerate it (`python -m
tests.test_lm_golden_store --write`, on the commit before a change that is meant to keep results).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "harvest_golden.json"
WORDS = "the quick brown fox jumps over lazy dog hello how can I help you today paris river sea".split()
# timestamps; the format's version; the crc over shard attributes that hold a timestamp
VOLATILE_KEYS = {"created", "started", "finished", "schema_version", "meta_crc32c"}


def _chats(path: Path, n: int = 20, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        msgs = [{"role": "system", "content": " ".join(rng.choice(WORDS, 6))}] if i % 4 == 0 else []
        for _ in range(int(rng.integers(1, 4))):
            for role, most in (("user", 30), ("assistant", 60)):
                msgs.append(
                    {"role": role, "content": " ".join(rng.choice(WORDS, int(rng.integers(2, most))))}
                )
        lines.append(json.dumps({"messages": msgs}))
        if i == 5:
            lines.append("{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _stores(root: Path) -> dict[str, dict]:
    """name -> HarvestConfig kwargs of the golden stores (paths under `root`)."""
    from tests._tiny_models import save_tiny_model, tiny_tokenizer

    models = {kind: save_tiny_model(kind, root / kind, tiny_tokenizer(kind)) for kind in ("llama", "qwen2")}
    chats = _chats(root / "chats.jsonl")
    common = dict(
        data=(str(chats),), progress=False, device="cpu", threads=1, batch_tokens=512, sort_window=8
    )
    return {
        "chat": dict(
            common, out=str(root / "chat"), model=str(models["llama"]), layers=(1, 2), dtype="bfloat16",
            shard_tokens=1200,
        ),
        "block": dict(
            common, out=str(root / "block"), model=str(models["qwen2"]), layers=(0, 3), dtype="float32",
            packing="block", context_size=64, shard_tokens=1000, dedup_ngram=6,
        ),
    }  # fmt: skip


def _normalise(obj, root: str):
    if isinstance(obj, dict):
        return {k: _normalise(v, root) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_normalise(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<ROOT>")
    return obj


def _is_meta_file(rel: str) -> bool:
    return rel == "store.json" or (rel.count("/") == 1 and rel.endswith(".zarr/zarr.json"))


def store_digest(store: Path, root: Path) -> dict:
    """Relative path -> sha256 of each file, or the normalised content of a metadata file."""
    out: dict = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        rel = path.relative_to(store).as_posix()
        data = path.read_bytes()
        if _is_meta_file(rel):
            out[rel] = _normalise(json.loads(data), str(root))
            continue
        if path.suffix == ".json":
            data = json.dumps(_normalise(json.loads(data), str(root)), sort_keys=True).encode()
        elif path.suffix == ".jsonl":
            data = data.replace(str(root).encode(), b"<ROOT>")
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def changed(want, got, where: str = "") -> list[str]:
    """Dotted paths of the values in `want` that `got` lacks or holds otherwise (extra keys are allowed)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [p for k, v in want.items() for p in changed(v, got.get(k, _MISSING), f"{where}{k}.")]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [
            p for i, (a, b) in enumerate(zip(want, got, strict=True)) for p in changed(a, b, f"{where}{i}.")
        ]
    return [] if want == got else [where.rstrip(".")]


_MISSING = object()


def environment() -> dict:
    import tokenizers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
    }


def harvest_digests(root: Path) -> dict[str, dict[str, str]]:
    import torch

    from fastsae.harvest.config import HarvestConfig
    from fastsae.harvest.runner import run_harvest

    torch.set_num_threads(1)
    digests = {}
    for name, kw in _stores(root).items():
        run_harvest(HarvestConfig(**kw))
        digests[name] = store_digest(Path(kw["out"]), root)
    return digests


def test_store_is_byte_identical_to_the_golden(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    env = environment()
    if env != golden["environment"]:
        pytest.skip(
            f"golden made with {golden['environment']}, this is {env}; regenerate it: {golden['made_by']}"
        )
    digests = harvest_digests(tmp_path)
    for name, want in golden["stores"].items():
        got = digests[name]
        missing = sorted(set(want) - set(got))  # files added since (the store's own records) are allowed
        assert not missing, f"{name}: {len(missing)} files of the golden are missing, e.g. {missing[:4]}"
        differ = [f"{f}: {p}" for f in want for p in changed(want[f], got[f])]
        assert not differ, f"{name}: {len(differ)} values differ from the golden, e.g. {differ[:4]}"
    assert len(golden["stores"]["chat"]) > 20  # several shards, each with its arrays


def _write() -> None:
    import os
    import subprocess
    import tempfile

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=GOLDEN.parents[2]
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "harvest", "lm", "store"],
        capture_output=True, text=True, cwd=GOLDEN.parents[2],
    ).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        stores = harvest_digests(Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    doc = {
        "made_by": f"stores harvested at commit {commit} with `python -m tests.test_lm_golden_store --write`"
        + (" (with uncommitted changes)" if dirty else ""),
        "environment": environment(),
        "stores": stores,
    }
    GOLDEN.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({sum(len(s) for s in stores.values())} files)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_lm_golden_store --write")
    _write()
