"""Residual-stream capture that stops after the deepest asked decoder block.

Layer L = output of decoder block L (0-based) = HF `hidden_states[L + 1]` (SAELens convention).
Forward hooks on the asked blocks keep their outputs; the hook of the deepest block raises
`_StopForward`, so no later block, no final norm and no lm_head run. The model's own forward
builds the causal / sliding-window masks and rotary positions, so every architecture that
transformers implements as `base_model.layers` works unchanged.
"""

from __future__ import annotations


class _StopForward(Exception):
    """Raised by the deepest block's hook to end the forward pass early."""


def decoder_blocks(model):
    """The ModuleList of decoder blocks of a causal LM (or of its base model)."""
    base = getattr(model, "base_model", model)
    for owner in (base, getattr(base, "model", None), getattr(base, "decoder", None)):
        blocks = getattr(owner, "layers", None) if owner is not None else None
        if blocks is not None:
            return blocks
    raise TypeError(f"{type(model).__name__}: cannot find its decoder blocks (expected base_model.layers)")


class LayerCapture:
    """`cap(input_ids) -> {layer: hidden [B, T, d_model]}` with hooks registered once.

    Use as a context manager (or call close()) to remove the hooks.
    """

    def __init__(self, model, layers: list[int] | tuple[int, ...]):
        self.model = model
        self.base = getattr(model, "base_model", model)
        blocks = decoder_blocks(model)
        self.layers = sorted(layers)
        if not self.layers or self.layers[-1] >= len(blocks) or self.layers[0] < 0:
            raise ValueError(f"layers {self.layers} out of range: the model has {len(blocks)} decoder blocks")
        self._out: dict = {}
        deepest = self.layers[-1]
        self._handles = [
            blocks[layer].register_forward_hook(self._hook(layer, layer == deepest)) for layer in self.layers
        ]

    def _hook(self, layer: int, stop: bool):
        def hook(module, args, output):
            self._out[layer] = output[0] if isinstance(output, tuple) else output
            if stop:
                raise _StopForward

        return hook

    def __call__(self, input_ids, *, attention_mask=None, position_ids=None) -> dict:
        self._out = {}
        try:
            self.base(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
        except _StopForward:
            pass
        out, self._out = self._out, {}
        if len(out) != len(self.layers):
            raise RuntimeError(f"captured layers {sorted(out)} but asked {self.layers}")
        return out

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> LayerCapture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
