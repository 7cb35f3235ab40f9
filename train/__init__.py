"""Training SAEs on cached activations: the SAE modules (train.sae), SAELens-layout export (train.export),
the mixing reader and the training loop.

``train.load_sae(path)`` loads a saved SAE; it is imported lazily so that ``import train`` stays light (no torch).
"""

__all__ = ["load_sae"]


def __getattr__(name: str):
    if name == "load_sae":
        from fastsae.train.export import load_sae

        return load_sae
    raise AttributeError(f"module 'train' has no attribute {name!r}")
