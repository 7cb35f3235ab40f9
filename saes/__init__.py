"""fastsae.saes: the SAE floor (modules, SAELens-layout save/load, reconstruction-metric math).
Imports no stage; train and the analysis stages use it."""
