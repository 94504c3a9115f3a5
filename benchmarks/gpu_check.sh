#!/usr/bin/env bash
# The GPU checks, in one run: the CUDA tests of the PyTorch backend, the conformance suite on every
# CUDA device of PyTorch, JAX and CuPy (those that have one), and softmax on the GPU timed against
# torch.softmax, jax.nn.softmax and CuPy, with a device-to-device copy as the roofline.
# Run from the repository root, in an environment with torch (and optionally jax, cupy) built for
# CUDA:  bash benchmarks/gpu_check.sh   (a few minutes on one GPU)
# Without a network: what is missing (softmax-multi's own dependencies, pytest, hypothesis) is
# installed from the wheels in $WHEELS (default benchmarks/wheels; fill it elsewhere with
# `pip download -d benchmarks/wheels array-api-compat hypothesis pytest ml_dtypes`).
# Exit status: 0 all passed, 1 something failed, 3 no CUDA GPU found (nothing was checked).
set -uo pipefail
python="${PYTHON:-python3}"
wheels="${WHEELS:-benchmarks/wheels}"

if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU found (torch.cuda.is_available() is False or torch is missing): nothing checked"
    exit 3
fi
"$python" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
status=0

if ! "$python" -c "import softmax_multi, pytest, hypothesis, array_api_compat" 2>/dev/null; then
    echo "== installing softmax-multi and what it needs from $wheels (no index)"
    "$python" -m pip install -q --no-index --find-links "$wheels" --no-build-isolation -e '.[conformance]' || status=1
fi

echo "== CUDA tests of the PyTorch backend"
"$python" -m pytest -q -p no:cacheprovider tests/test_torch.py -k cuda || status=1

backends=(--smx-backend torch)
if "$python" -c "import jax, sys; sys.exit(0 if any(d.platform == 'gpu' for d in jax.devices()) else 1)" 2>/dev/null; then
    backends+=(--smx-backend jax)
else
    echo "gpu_check: JAX is missing or has no GPU device here: left out"
fi
if "$python" -c "import cupy, sys; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() else 1)" 2>/dev/null; then
    backends+=(--smx-backend cupy)
else
    echo "gpu_check: CuPy is missing or reaches no GPU here: left out"
fi
echo "== conformance on every device of: ${backends[*]}"
"$python" -m softmax_multi.cli conformance "${backends[@]}" --smx-tier quick || status=1

echo "== softmax on the GPU against each library's own (medians of interleaved samples)"
"$python" benchmarks/gpu_bench.py || status=1
exit $status
