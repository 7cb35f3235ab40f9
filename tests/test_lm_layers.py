"""fastsae.lm.layers: layer L <-> SAELens hook name <-> HF decoder block <-> hidden_states index."""

from __future__ import annotations

import pytest
import torch

from fastsae.errors import UsageError
from fastsae.lm import (
    block_module,
    block_module_name,
    check_layers,
    decoder_blocks,
    hidden_states_index,
    hook_name,
    layer_of_hook,
)
from tests._tiny_models import build_tiny_model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request):
    return build_tiny_model(request.param, num_layers=4)


def test_hook_names_round_trip():
    for layer in (0, 9, 29):
        assert hook_name(layer) == f"blocks.{layer}.hook_resid_post"
        assert layer_of_hook(hook_name(layer)) == layer
        assert hidden_states_index(layer) == layer + 1
    for bad in ("blocks.9.hook_resid_pre", "blocks.x.hook_resid_post", "model.layers.9", ""):
        with pytest.raises(UsageError, match="residual-stream"):
            layer_of_hook(bad)
    with pytest.raises(UsageError):
        hook_name(-1)


def test_block_module_is_the_block_whose_output_is_the_layer(tiny):
    ids = torch.randint(0, tiny.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        hidden = tiny(ids, output_hidden_states=True).hidden_states
    for layer in range(3):  # the last block's hidden_states entry is after the final norm
        name = block_module_name(tiny, layer)
        assert name == f"model.layers.{layer}"
        module = tiny.get_submodule(name)
        assert module is block_module(tiny, layer) is decoder_blocks(tiny)[layer]
        out = []
        handle = module.register_forward_hook(
            lambda m, a, o, out=out: out.append(o[0] if isinstance(o, tuple) else o)
        )
        try:
            with torch.inference_mode():
                tiny(ids)
        finally:
            handle.remove()
        assert torch.equal(out[0], hidden[hidden_states_index(layer)])


def test_check_layers(tiny):
    assert check_layers(tiny, [3, 0, 3]) == [0, 3]
    for bad in ([4], [-1], []):
        with pytest.raises(UsageError, match="4 decoder blocks"):
            check_layers(tiny, bad)
