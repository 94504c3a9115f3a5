"""The GPU benchmark of benchmarks/gpu_check.sh: float32 softmax along the last axis on the GPU,
ours against torch.softmax (allocating and with out=), jax.nn.softmax under jit and a CuPy
expression where those have a GPU, and a device-to-device copy of the same bytes (the roofline).
Goals: torch CUDA native / ours >= 0.9; large rows, copy / ours with out= >= 0.8."""

from __future__ import annotations

import torch

import softmax_multi as smx
from softmax_multi.bench.timing import time_interleaved
from softmax_multi.conformance import oracle


def synced(f, sync=torch.cuda.synchronize):
    def call():
        f()
        sync()

    return call


def gpu_peers() -> dict:
    peers = {}
    try:
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            peers["jax"] = (jax, gpus[0])
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount():
            peers["cupy"] = cupy
    except Exception:  # missing, or no driver
        pass
    return peers


def main() -> None:
    peers = gpu_peers()
    for shape in [(64, 1000), (4096, 32000), (32, 1_000_000)]:
        x = torch.randn(shape, device="cuda") * 3
        out = torch.empty_like(x)
        methods = {
            "smx": synced(lambda: smx.softmax(x)),
            "torch.softmax": synced(lambda: torch.softmax(x, -1)),
            "smx out=": synced(lambda: smx.softmax(x, out=out)),
            "torch.softmax out=": synced(lambda: torch.softmax(x, -1, out=out)),
            "copy": synced(lambda: out.copy_(x)),
        }
        if "jax" in peers:
            jax, gpu = peers["jax"]
            j = jax.device_put(x.cpu().numpy(), gpu)
            ours, native = jax.jit(smx.softmax), jax.jit(jax.nn.softmax)
            methods["smx[jax] jit"] = lambda: ours(j).block_until_ready()
            methods["jax.nn.softmax jit"] = lambda: native(j).block_until_ready()
        if "cupy" in peers:
            cupy = peers["cupy"]
            c = cupy.asarray(x.cpu().numpy())
            sync = cupy.cuda.Device().synchronize

            def expression():
                e = cupy.exp(c - c.max(-1, keepdims=True))
                return e / e.sum(-1, keepdims=True)

            methods["smx[cupy]"] = synced(lambda: smx.softmax(c), sync)
            methods["cupy expression"] = synced(expression, sync)
        t = time_interleaved(methods, rounds=11)
        err = oracle.ulp_error(smx.softmax(x).cpu().numpy(), oracle.softmax(x.cpu().numpy(), (1,)), "float32")
        line = (
            f"{shape}: smx[torch] {t['smx'] * 1e6:.1f} us, torch.softmax {t['torch.softmax'] * 1e6:.1f} us; "
            f"native / ours {t['torch.softmax'] / t['smx']:.2f}, with out= {t['torch.softmax out='] / t['smx out=']:.2f}; "
            f"copy / ours (out=) {t['copy'] / t['smx out=']:.2f}; error {err:.1f} eps"
        )
        if "jax" in peers:
            line += f"; jax.nn / smx[jax] {t['jax.nn.softmax jit'] / t['smx[jax] jit']:.2f}"
        if "cupy" in peers:
            line += f"; cupy expression / smx[cupy] {t['cupy expression'] / t['smx[cupy]']:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
