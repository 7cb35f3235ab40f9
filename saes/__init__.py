"""fastsae.saes: the SAE floor (modules, SAELens-layout save/load, reconstruction-metric math).
Imports no stage (kernels and fastsae.errors only); train and the analysis stages use it.

    from fastsae.saes import load_sae
    sae = load_sae("sweep/jumprelu-x16-sc0.01")   # any folder save_sae wrote, or an SAELens v6 one
    acts = sae.encode(x)                          # [..., d_sae]; exact gradients w.r.t. x and parameters
    x_hat = sae.decode(acts)                      # [..., d_in]; exact gradients w.r.t. every entry of acts
    stats = ReconstructionStats()                 # MSE, MSE_st, EV, L0 as train logs them, streamed
    stats.update(x, x_hat, acts=acts, token_types=types)   # one sequence (or pass seq= per token)
    stats.compute(), stats.extras()
"""

from fastsae.saes.metrics import (
    CORE_KEYS,
    DENSE_ABOVE,
    SPECIAL,
    HeldOut,
    ReconstructionStats,
    firing_fractions,
    heldout_metrics,
    reconstruction_metrics,
    token_errors,
)
from fastsae.saes.sae import (
    MIN_THRESHOLD,
    Arch,
    SAEError,
    SAESpec,
    SAESpecError,
    SparseAutoencoder,
    TrainStep,
    geometric_median,
)
from fastsae.saes.saelens import (
    SAEFormatError,
    SAEInfo,
    SAENotFoundError,
    load_sae,
    read_sae_info,
    saelens_cfg,
    save_sae,
)

__all__ = [
    "CORE_KEYS",
    "DENSE_ABOVE",
    "SPECIAL",
    "HeldOut",
    "ReconstructionStats",
    "firing_fractions",
    "heldout_metrics",
    "reconstruction_metrics",
    "token_errors",
    "MIN_THRESHOLD",
    "Arch",
    "SAEError",
    "SAEFormatError",
    "SAEInfo",
    "SAENotFoundError",
    "SAESpec",
    "SAESpecError",
    "SparseAutoencoder",
    "TrainStep",
    "geometric_median",
    "load_sae",
    "read_sae_info",
    "saelens_cfg",
    "save_sae",
]
