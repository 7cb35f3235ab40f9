"""fastsae.lm's public names: each one resolves, and importing the package loads no torch."""

from __future__ import annotations

import subprocess
import sys

import fastsae.lm as lm


def test_every_public_name_resolves():
    for name in lm.__all__:
        assert getattr(lm, name) is not None, name
    assert set(lm.__all__) <= set(dir(lm))


def test_import_is_cheap():
    code = "import sys, fastsae.lm, fastsae.lm.embedded; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
