#!/usr/bin/env bash
# The GPU checks in one go, for a CUDA machine that cannot reach a package index.
#
#   bash benchmarks/gpu_check.sh prepare [PYTHON_VERSION]   # here, with an index: wheels into .gpu-wheels/
#   bash benchmarks/gpu_check.sh run [STEP...]              # there: install what is missing, then the steps
#
# prepare downloads the pure-store dependencies a stock CUDA PyTorch image usually lacks (zarr and what it
# needs, numcodecs) as wheels for PYTHON_VERSION (default 3.12), into .gpu-wheels/ (git-ignored; carry it).
# run installs them from there with --no-index when `import zarr` fails, installs fastsae without touching
# the image's torch/triton (--no-deps), prints the versions, then runs the steps (default: all, in order):
#
#   tests     TRITON_INTERPRET=0 pytest -m gpu: every Triton kernel and gradient against the torch reference
#   kernels   benchmarks/kernels.py: fused forward+backward vs torch eager, TFLOP/s and % of a dense matmul
#   sweep     benchmarks/sweep.py --device cuda at d_in 576: 4 SAEs in one pass / 4 single runs (goal <= 0.5)
#   reader    the reader's CUDA path: stored-dtype batches, pinned, uploaded and widened on the device,
#             against the CPU float32 path (tokens/s of each, same store, same process)
#   fp8       benchmarks/fp8_reader.py --cuda: an fp8_e4m3 store's packed rows (codes + scale) uploaded and
#             decoded on the GPU, against a bf16 store's, same rows (tokens/s, bytes per token)
#
# Each step's output also goes to $OUT/<step>.txt when $OUT is set (the device tool brings $OUT back).
# Under a 10-minute limit per command, split the round: `run tests kernels`, then `run sweep`, then `run reader fp8`
# (the sweep and reader steps first build synthetic stores of 4.8 and 1.1 GB under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels

prepare() {
    local py="${1:-3.12}"
    local zarr_version
    zarr_version=$(python -c 'import zarr; print(zarr.__version__)')
    mkdir -p "$WHEELS"
    python -m pip download --only-binary=:all: --python-version "$py" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$WHEELS" "zarr==$zarr_version" numcodecs
    ls -l "$WHEELS"
}

install() {
    if ! python3 -c 'import zarr' 2>/dev/null; then
        python3 -m pip install -q --no-index --find-links "$WHEELS" zarr numcodecs
    fi
    python3 -m pip install -q --no-deps --no-build-isolation -e .
    python3 - <<'EOF'
import torch, triton, zarr
print(f"torch {torch.__version__}, triton {triton.__version__}, zarr {zarr.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name() if torch.cuda.is_available() else ''}")
EOF
}

step() {
    local name=$1
    shift
    echo "== $name: $*"
    if [[ -n "${OUT:-}" ]]; then
        "$@" 2>&1 | tee "$OUT/$name.txt"
    else
        "$@"
    fi
}

run_step() {
    case $1 in
        tests) step tests env TRITON_INTERPRET=0 python3 -m pytest -m gpu -q -ra ;;
        kernels) step kernels python3 benchmarks/kernels.py ;;
        sweep) step sweep python3 benchmarks/sweep.py --d 576 --expansion 8,16 --batch-size 4096 \
            --tokens 4096000 --store-tokens 4200000 --rounds 1 --device cuda ;;
        reader) step reader python3 benchmarks/reader.py --cuda ;;
        fp8) step fp8 python3 benchmarks/fp8_reader.py --cuda --rounds 2 ;;
        *) echo "unknown step $1 (tests, kernels, sweep, reader, fp8)" >&2; exit 2 ;;
    esac
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run)
        shift
        install
        steps=("$@")
        [[ ${#steps[@]} -gt 0 ]] || steps=(tests kernels sweep reader fp8)
        for s in "${steps[@]}"; do run_step "$s"; done
        ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
esac
