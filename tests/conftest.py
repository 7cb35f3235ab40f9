"""Test-wide environment: set before any kernel or model module is imported.

TRITON_INTERPRET=1 makes Triton kernels run on CPU tensors (slowly, in numpy), so the
fused kernels are tested in CI without a GPU. The hub is off: every model and dataset
in the tests is built locally or shipped in a package.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# On 2 shared cores, OpenMP's spinning threads slow torch down by an order of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(params=["always", "never"])
def sparse_mode(request, monkeypatch):
    """Forces the kernels' sparse (gather) or dense path (FASTSAE_KERNELS_SPARSE, read at call time)."""
    monkeypatch.setenv("FASTSAE_KERNELS_SPARSE", request.param)
    return request.param
