"""Layer naming, in one place. Layer L (0-based) is the residual stream after decoder block L:

    layer L  <->  SAELens hook name  blocks.L.hook_resid_post
             <->  HF module          decoder block L (e.g. model.layers.L of a Llama)
             <->  HF hidden_states   index L + 1 (hidden_states[0] is the embedding output)

For the last block HF's hidden_states[-1] is after the final norm; layer L is the block's own
output, before it (as SAELens' hook_resid_post).
"""

from __future__ import annotations

import re

from fastsae.errors import UsageError

HOOK_POINT = "hook_resid_post"
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")


def hook_name(layer: int) -> str:
    """SAELens hook name of layer L: 'blocks.L.hook_resid_post'."""
    if int(layer) < 0:
        raise UsageError(f"layer {layer}: layers are 0-based decoder block indices")
    return f"blocks.{int(layer)}.{HOOK_POINT}"


def layer_of_hook(name: str) -> int:
    """'blocks.L.hook_resid_post' -> L; UsageError for any other hook."""
    m = _HOOK_RE.match(name)
    if not m:
        raise UsageError(f"hook {name!r}: only residual-stream hooks 'blocks.L.{HOOK_POINT}' are supported")
    return int(m.group(1))


def hidden_states_index(layer: int) -> int:
    """Index of layer L in HF's `output_hidden_states=True` tuple (entry 0 is the embeddings)."""
    return int(layer) + 1


def decoder_blocks(model):
    """The ModuleList of decoder blocks of a causal LM (or of its base model)."""
    base = getattr(model, "base_model", model)
    for owner in (base, getattr(base, "model", None), getattr(base, "decoder", None)):
        blocks = getattr(owner, "layers", None) if owner is not None else None
        if blocks is not None:
            return blocks
    raise TypeError(f"{type(model).__name__}: cannot find its decoder blocks (expected base_model.layers)")


def check_layers(model, layers) -> list[int]:
    """`layers` sorted and distinct; UsageError naming the block count for one out of range."""
    n = len(decoder_blocks(model))
    out = sorted({int(layer) for layer in layers})
    if not out or out[0] < 0 or out[-1] >= n:
        raise UsageError(f"layers {out} out of range: the model has {n} decoder blocks (layers 0..{n - 1})")
    return out


def block_module(model, layer: int):
    """The decoder block whose output is layer L."""
    return decoder_blocks(model)[check_layers(model, [layer])[0]]


def block_module_name(model, layer: int) -> str:
    """The HF module path of layer L's block inside `model`, e.g. 'model.layers.9'."""
    block = block_module(model, layer)
    for name, module in model.named_modules():
        if module is block:
            return name
    raise TypeError(f"{type(model).__name__}: decoder block {layer} is not one of its modules")
