"""Real SAELens loads our saved SAEs and computes the same encode/decode (skipped without sae_lens).

sae-lens is not a dependency. To run this check, use a throwaway venv that sees the system packages:
    python -m venv /tmp/saelens-venv --system-site-packages && /tmp/saelens-venv/bin/pip install sae-lens
    /tmp/saelens-venv/bin/python -m pytest tests/test_export_saelens.py
"""

import os

import pytest
import torch

from fastsae.saes import Arch, SAESpec, SparseAutoencoder, save_sae

# CI sets FASTSAE_REQUIRE_SAELENS=1 in its SAELens venv, where a missing sae_lens must fail, not skip.
if os.environ.get("FASTSAE_REQUIRE_SAELENS") == "1":
    import sae_lens
else:
    sae_lens = pytest.importorskip("sae_lens")


def _trained_like(arch: Arch) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(1)
    sae = SparseAutoencoder(SAESpec(arch, 32, 128, k=8), generator=g)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.b_dec.normal_(0, 0.5, generator=g)
        if arch == Arch.JUMPRELU:
            sae.threshold.uniform_(0.01, 0.4, generator=g)
    if arch == Arch.BATCHTOPK:
        sae.training_forward(torch.randn(64, 32, generator=g), sparsity_coef=0)
    # as after training with activation normalisation: the folded weights are what SAELens must reproduce
    sae.fold_activation_norm_(0.25)
    return sae


@pytest.mark.parametrize("arch", list(Arch))
def test_saelens_load_from_disk_matches_our_encode_and_decode(tmp_path, arch):
    sae = _trained_like(arch)
    save_sae(
        sae, tmp_path, hook_name="blocks.9.hook_resid_post", model_name="SmolLM2-135M-Instruct", extra={}
    )
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path))
    assert theirs.cfg.metadata.hook_name == "blocks.9.hook_resid_post"
    assert theirs.cfg.apply_b_dec_to_input is False
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(2)) * 4
    with torch.no_grad():
        ours_acts, their_acts = sae.encode(x), theirs.encode(x)
        assert torch.equal(ours_acts != 0, their_acts != 0)  # the same active set
        torch.testing.assert_close(their_acts, ours_acts, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(ours_acts), sae.decode(ours_acts), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), sae(x), rtol=1e-5, atol=1e-5)
