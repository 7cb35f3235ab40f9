"""The GPU path of kernels/ compiles for Hopper (sm_90) without a GPU: Triton's ahead-of-time compiler and
bundled ptxas turn each kernel into a cubin. Catches what the interpreter cannot (compiled-mode typing,
constexpr branches, shared-memory budgets, tensor-core use). Runs in a subprocess: this test session imported
Triton in interpreter mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastsae.kernels import encode, sparse

target = GPUTarget("cuda", 90, 32)
out = []


def compile_(kernel, sig, consts, aligned, num_warps, num_stages=3):
    names = list(sig)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
    k = triton.compile(src, target=target, options={"num_warps": num_warps, "num_stages": num_stages})
    ptx = k.asm["ptx"]
    out.append({"kernel": kernel.__name__, "consts": {k: str(v) for k, v in consts.items()},
                "shared": k.metadata.shared, "wgmma": "wgmma" in ptx, "local": ".local" in ptx})


def fwd(dt, prec, cfg):
    sig = {"x_ptr": f"*{dt}", "w_ptr": f"*{dt}", "b_ptr": f"*{dt}", "th_ptr": f"*{dt}", "acts_ptr": f"*{dt}",
           "l0_ptr": "*fp32", "active_ptr": "*i32", "band_ptr": "*i32", "N": "i32", "D_IN": "i32",
           "D_SAE": "i32", "WORDS": "i32", "half_eps": "fp32", "UPCAST": "constexpr", "USE_DOT": "constexpr",
           "PRECISION": "constexpr", "BLOCK_N": "constexpr", "BLOCK_S": "constexpr", "BLOCK_K": "constexpr",
           "GROUP_N": "constexpr"}
    consts = {"UPCAST": False, "USE_DOT": True, "PRECISION": prec, **cfg.kwargs}
    aligned = ["x_ptr", "w_ptr", "b_ptr", "th_ptr", "acts_ptr", "l0_ptr", "active_ptr", "band_ptr", "D_IN", "D_SAE"]
    compile_(encode._encode_fwd_kernel, sig, consts, aligned, cfg.num_warps, cfg.num_stages)


fwd("bf16", "tf32", encode._GPU_FWD_CONFIGS[0])
fwd("fp32", "ieee", encode._GPU_FWD_CONFIGS[-1])
sig = {"ga_ptr": "*bf16", "gl0_ptr": "*bf16", "th_ptr": "*bf16", "active_ptr": "*i32", "band_ptr": "*i32",
       "gz_ptr": "*bf16", "gb_part_ptr": "*fp32", "gth_part_ptr": "*fp32", "N": "i32", "D_SAE": "i32",
       "WORDS": "i32", "HAS_GA": "constexpr", "HAS_GL0": "constexpr", "BLOCK_N": "constexpr", "BLOCK_S": "constexpr"}
compile_(encode._encode_bwd_kernel, sig, {"HAS_GA": True, "HAS_GL0": True, **encode._BWD_BLOCKS}, ["ga_ptr"], 4)
sig = {"off_ptr": "*i64", "idx_ptr": "*i64", "val_ptr": "*bf16", "a_ptr": "*bf16", "bias_ptr": "*bf16",
       "out_ptr": "*bf16", "S": "i32", "D": "i32", "stride_a": "i32", "stride_o": "i32", "HAS_BIAS": "constexpr",
       "BLOCK_SEG": "constexpr", "BLOCK_P": "constexpr", "BLOCK_D": "constexpr"}
consts = {"HAS_BIAS": True, **sparse.GPU_SEGMENT_BLOCKS, "BLOCK_D": 256}
compile_(sparse._segment_gather_kernel, sig, consts, ["a_ptr", "stride_a"], 4)
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_gpu_path_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("Triton's bundled ptxas is unavailable")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert len(results) == 4
    for r in results:
        assert r["shared"] <= 227 * 1024, r  # H100 shared memory per block
        assert not r["local"], r  # no register spills
    assert results[0]["wgmma"]  # bf16 encoder uses Hopper tensor cores
