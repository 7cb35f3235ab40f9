"""Training SAEs on cached activations: the mixing reader, the training loop, sweeps and checkpoints.

The SAE modules, their SAELens-layout save/load and the reconstruction metrics train logs live one floor
down, in fastsae.saes (``from fastsae.saes import load_sae``).
"""
