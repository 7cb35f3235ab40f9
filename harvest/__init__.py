"""Harvest stage: read chat/text data, run the model, write activations to a store.

Kept import-free so that ``fastsae --help`` stays fast; import the submodules you need.
"""
