"""A tiny world for the analysis tests: a tiny Llama, a store harvested from it, SAEs trained on it.

eval, features, dashboard and steer tests all need the same few seconds of setup; one helper keeps
their settings in one place (small batches, a short run, a held-out split).
"""

from __future__ import annotations

from pathlib import Path

# a short, cheap training run on a tiny store; tests override what they care about
TINY_TRAIN = dict(
    batch_size=64,
    tokens=64 * 40,
    lr=(1e-3,),
    buffer_tokens=1024,
    chunk_tokens=64,
    holdout=0.25,
    log_every=10,
    eval_every=20,
    checkpoint_every=1000,
    progress=False,
    init_sample_tokens=512,
)


def tiny_model(root: Path, kind: str = "llama") -> Path:
    from tests._tiny_models import save_tiny_model, tiny_tokenizer

    return save_tiny_model(kind, root / kind, tiny_tokenizer(kind))


def tiny_harvest(root: Path, model: Path, *, n_chats: int, layers: tuple[int, ...], dtype: str = "float32",
                 name: str = "store") -> Path:  # fmt: skip
    """Harvest `n_chats` generated chats from `model` into root/name; returns the store's path."""
    from fastsae.harvest.config import HarvestConfig
    from fastsae.harvest.runner import run_harvest
    from tests.test_harvest_store import write_chats

    out = root / name
    chats = write_chats(root / f"{name}-chats.jsonl", n=n_chats)
    run_harvest(
        HarvestConfig(
            out=str(out),
            model=str(model),
            data=(str(chats),),
            layers=layers,
            dtype=dtype,
            batch_tokens=512,
            progress=False,
            device="cpu",
        )  # fmt: skip
    )
    return out


def tiny_train(store: Path, out: Path, *, layer: int, **overrides) -> list[Path]:
    """Train TINY_TRAIN (plus overrides; default one JumpReLU SAE) on `store`; returns the SAE folders."""
    from fastsae.train.config import TrainConfig
    from fastsae.train.trainer import train_saes

    kw = {"arch": ("jumprelu",), **TINY_TRAIN, **overrides}
    return train_saes(TrainConfig(store=str(store), layer=layer, out=str(out), **kw))
