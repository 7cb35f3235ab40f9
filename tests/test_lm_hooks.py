"""fastsae.lm.hooks on tiny Llama/Qwen2 models: capture == hidden_states[L+1], replace, add (steering),
early stop, and hooks that are always removed."""

from __future__ import annotations

import pytest
import torch

from fastsae.errors import UsageError
from fastsae.lm import ResidualHooks, decoder_blocks, hidden_states_index
from tests._tiny_models import build_tiny_model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request):
    model = build_tiny_model(request.param, num_layers=4)
    with torch.inference_mode():  # transformers installs its own hooks on first use
        model(torch.zeros(1, 2, dtype=torch.long), output_hidden_states=True)
    return model


@pytest.fixture(scope="module")
def ids(tiny):
    return torch.randint(0, tiny.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(0))


def hook_counts(model) -> list[int]:
    return [len(b._forward_hooks) for b in decoder_blocks(model)]


def logits(model, ids):
    with torch.inference_mode():
        return model(ids).logits


def test_capture_equals_hidden_states_and_stops_early(tiny, ids):
    blocks = decoder_blocks(tiny)
    n_hooks = hook_counts(tiny)
    ran, norm_calls = [], []
    probes = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    probes.append(tiny.base_model.norm.register_forward_hook(lambda *a: norm_calls.append(1)))
    try:
        with torch.inference_mode():
            hidden = tiny(ids, output_hidden_states=True).hidden_states  # runs all 4 blocks
            ran.clear()
            norm_calls.clear()
            with ResidualHooks(tiny, capture=[0, 2], stop=True) as hooks:
                run = hooks(ids)
            assert ran == [0, 1, 2], "capture must stop after the deepest asked block"
            assert not norm_calls and run.output is None, "a stopped forward runs no final norm, no lm_head"
            for layer in (0, 2):
                torch.testing.assert_close(
                    run.captured[layer], hidden[hidden_states_index(layer)], rtol=0, atol=1e-6
                )
            # the last block: HF's hidden_states[-1] is after the final norm; layer 3 is the block output
            with ResidualHooks(tiny, capture=[3], stop=True) as hooks:
                last = hooks(ids).captured[3]
            torch.testing.assert_close(tiny.base_model.norm(last), hidden[4], rtol=0, atol=1e-5)
            ran.clear()
            with ResidualHooks(tiny, capture=[0, 2]) as hooks:  # no stop: the whole model, same values
                full = hooks(ids)
            assert ran == [0, 1, 2, 3] and norm_calls
            for layer in (0, 2):
                assert torch.equal(full.captured[layer], run.captured[layer])
            assert torch.equal(full.output.logits, tiny(ids).logits)
    finally:
        for h in probes:
            h.remove()
    assert hook_counts(tiny) == n_hooks, "ResidualHooks must remove its hooks"


def test_replace_identity_is_bit_identical_and_f_changes_downstream(tiny, ids):
    ref = logits(tiny, ids)
    with torch.inference_mode(), ResidualHooks(tiny, replace={1: lambda x: x}) as hooks:
        assert torch.equal(hooks(ids).output.logits, ref)
        assert torch.equal(tiny(ids).logits, ref)  # the hooks act on any forward inside the block
    with torch.inference_mode():
        with ResidualHooks(tiny, capture=[0, 1, 2]) as hooks:
            clean = hooks(ids).captured
        with ResidualHooks(tiny, capture=[0, 1, 2], replace={1: lambda x: 0.5 * x}) as hooks:
            run = hooks(ids)
    assert torch.equal(run.captured[0], clean[0]), "upstream of the replaced layer is untouched"
    assert torch.equal(run.captured[1], 0.5 * clean[1]), "capture sees what goes on downstream"
    assert not torch.allclose(run.captured[2], clean[2]) and not torch.allclose(run.output.logits, ref)


def test_add_zero_is_identical_and_add_equals_replace(tiny, ids):
    d = tiny.config.hidden_size
    v = torch.randn(d, generator=torch.Generator().manual_seed(1))
    ref = logits(tiny, ids)
    with torch.inference_mode():
        with ResidualHooks(tiny, add={2: torch.zeros(d)}) as hooks:
            assert torch.equal(hooks(ids).output.logits, ref)
        with ResidualHooks(tiny, add={1: v}) as hooks:
            added = hooks(ids).output.logits
        with ResidualHooks(tiny, replace={1: lambda x: x + v}) as hooks:
            assert torch.equal(hooks(ids).output.logits, added)
        assert not torch.allclose(added, ref)
        # only at masked positions: earlier positions are untouched (causal), the rest equals replace
        mask = torch.zeros(ids.shape[1], dtype=torch.bool)
        mask[10:] = True
        with ResidualHooks(tiny, add={1: (v, mask)}) as hooks:
            masked = hooks(ids).output.logits
        with ResidualHooks(tiny, replace={1: lambda x: torch.where(mask[:, None], x + v, x)}) as hooks:
            assert torch.equal(hooks(ids).output.logits, masked)
        assert torch.equal(masked[:, :10], ref[:, :10]) and not torch.allclose(masked[:, 10:], ref[:, 10:])
        with (
            ResidualHooks(tiny, add={1: (v, mask[:5])}) as hooks,
            pytest.raises(UsageError, match="positions"),
        ):
            hooks(ids)


def test_steering_hooks_act_during_generate(tiny, ids):
    prompt = ids[:1, :8]
    v = 4.0 * torch.randn(tiny.config.hidden_size, generator=torch.Generator().manual_seed(2))
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        with ResidualHooks(tiny, add={2: v}):
            steered = tiny.generate(prompt, **kw)
        with ResidualHooks(tiny, replace={2: lambda x: x + v}):
            assert torch.equal(tiny.generate(prompt, **kw), steered)
    assert steered.shape == (1, 12)


def test_hooks_are_removed_after_an_exception(tiny, ids):
    n_hooks = hook_counts(tiny)

    def boom(x):
        raise ArithmeticError("in the hook")

    with (
        pytest.raises(ArithmeticError),
        torch.inference_mode(),
        ResidualHooks(tiny, replace={2: boom}) as hooks,
    ):
        hooks(ids)
    assert hook_counts(tiny) == n_hooks
    with pytest.raises(KeyError), ResidualHooks(tiny, capture=[1], stop=True):
        assert hook_counts(tiny) != n_hooks
        raise KeyError("in the block")
    assert hook_counts(tiny) == n_hooks
    hooks = ResidualHooks(tiny, capture=[1])
    assert hook_counts(tiny) == n_hooks, "no hook before the with block"
    with pytest.raises(RuntimeError, match="with"):
        hooks(ids)


def test_bad_hooks_are_usage_errors(tiny):
    with pytest.raises(UsageError, match="4 decoder blocks"):
        ResidualHooks(tiny, capture=[4])
    with pytest.raises(ValueError, match="4 decoder blocks"):
        ResidualHooks(tiny, add={-1: torch.zeros(tiny.config.hidden_size)})
    with pytest.raises(UsageError, match="nothing to do"):
        ResidualHooks(tiny)
    ids = torch.zeros(1, 3, dtype=torch.long)
    with (
        ResidualHooks(tiny, replace={0: lambda x: x[:, :1]}) as hooks,
        pytest.raises(UsageError, match="shape"),
    ):
        hooks(ids)
