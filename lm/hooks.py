"""Hooks on the residual stream after decoder block L (layer L, see layers.py): capture it, replace
it, or add to it, with or without stopping the forward after the deepest hooked block.

    with ResidualHooks(model, capture=[3, 9], stop=True) as hooks:      # harvest
        acts = hooks(input_ids).captured                                # {3: [B, T, d], 9: ...}
    with ResidualHooks(model, replace={9: sae_reconstruct}) as hooks:   # splice an SAE in
        logits = hooks(input_ids).output.logits
    with ResidualHooks(model, add={9: (vector, mask)}):                 # steer any forward, generate()
        model.generate(...)

Forward hooks on the blocks do the work, so every architecture transformers implements with
`base_model.layers` works unchanged (the model's own forward builds the causal and sliding-window
masks and the rotary positions). At one layer the order is: replace, then add, then capture: capture
records what goes on to the next block. With `stop=True` the deepest hooked block raises
`_StopForward` after its hook, so no later block, final norm or lm_head runs; `hooks(...)` catches
it (a direct `model(...)` call would see it). The hooks exist only inside the `with` block and are
removed on the way out, exception or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fastsae.errors import UsageError
from fastsae.lm.layers import check_layers, decoder_blocks


class _StopForward(Exception):
    """Raised by the deepest block's hook to end the forward pass early."""


@dataclass
class HookedOutput:
    captured: dict = field(default_factory=dict)  # layer -> residual [B, T, d] (after any edit there)
    output: object = None  # the model's output; None when the forward stopped early


def _add_spec(layer: int, spec):
    """`vector` or `(vector, mask)` -> (vector, mask or None)."""
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise UsageError(f"add at layer {layer}: give a vector or (vector, mask), not {len(spec)} items")
        return spec
    return spec, None


class ResidualHooks:
    """Context manager: hooks on the residual stream of `model` (see the module doc).

    capture: layers whose residual to keep: `hooks(...).captured`, or `.captured` after a direct
        `model(...)` call inside the block (the last forward's).
    replace: {layer: f}, f(residual [B, T, d]) -> what goes on instead (same shape).
    add: {layer: vector [d] (or broadcastable to [B, T, d])} or {layer: (vector, mask)} with a bool mask
        [T] or [B, T]: the vector is added only where the mask is True; other positions are untouched.
    stop: end the forward after the deepest hooked block (no logits then).
    """

    def __init__(
        self,
        model,
        *,
        capture: Iterable[int] = (),
        replace: Mapping[int, Callable] | None = None,
        add: Mapping[int, object] | None = None,
        stop: bool = False,
    ):
        self.model = model
        self.base = getattr(model, "base_model", model)
        self.capture = check_layers(model, capture) if capture else []
        self.replace = dict(replace or {})
        self.add = {int(layer): _add_spec(layer, spec) for layer, spec in (add or {}).items()}
        hooked = set(self.capture) | set(self.replace) | set(self.add)
        if not hooked:
            raise UsageError("ResidualHooks: nothing to do (give capture, replace or add)")
        self.layers = check_layers(model, hooked)
        self.stop = stop
        self.captured: dict = {}
        self._handles: list = []

    def __enter__(self) -> ResidualHooks:
        blocks = decoder_blocks(self.model)
        deepest = self.layers[-1]
        try:
            for layer in self.layers:
                hook = self._hook(layer, self.stop and layer == deepest)
                self._handles.append(blocks[layer].register_forward_hook(hook))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _edit(self, layer: int, x):
        import torch

        if layer in self.replace:
            y = self.replace[layer](x)
            if tuple(y.shape) != tuple(x.shape):
                raise UsageError(
                    f"replace at layer {layer}: got shape {tuple(y.shape)}, not {tuple(x.shape)}"
                )
            x = y
        if layer in self.add:
            vector, mask = self.add[layer]
            vector = torch.as_tensor(vector).to(device=x.device, dtype=x.dtype)
            if mask is None:
                x = x + vector
            else:
                mask = torch.as_tensor(mask, device=x.device, dtype=torch.bool)
                if mask.shape[-1] != x.shape[1]:
                    raise UsageError(
                        f"add at layer {layer}: the mask has {mask.shape[-1]} positions, the input {x.shape[1]}"
                    )
                x = torch.where(mask[..., None], x + vector, x)
        return x

    def _hook(self, layer: int, stop: bool):
        edits = layer in self.replace or layer in self.add

        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            new = self._edit(layer, hidden) if edits else hidden
            if layer in self.capture:
                self.captured[layer] = new
            if stop:
                raise _StopForward
            if new is hidden:
                return None  # output unchanged
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    def __call__(self, input_ids, *, attention_mask=None, position_ids=None, **kwargs) -> HookedOutput:
        """One forward with the hooks: the decoder stack alone when stopping, else the whole model (no KV
        cache unless `use_cache=True` is passed; other keyword arguments go to the model)."""
        if not self._handles:
            raise RuntimeError("ResidualHooks: call it inside its `with` block")
        self.captured = {}
        output = None
        try:
            output = (self.base if self.stop else self.model)(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                **{"use_cache": False, **kwargs},
            )  # fmt: skip
        except _StopForward:
            pass
        captured, self.captured = self.captured, {}
        if len(captured) != len(self.capture):
            raise RuntimeError(f"captured layers {sorted(captured)} but asked {self.capture}")
        return HookedOutput(captured=captured, output=output)
