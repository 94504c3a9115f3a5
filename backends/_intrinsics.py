"""LLVM intrinsics for the fused kernels: a vectorisable max, atomics, and the spin-loop hint.

Numba offers none of these; each is a few lines of LLVM IR. ``maxnum`` lets a loop of maxima
become a vector reduction; the atomics let threads share work through counters in a small int64
array (see :mod:`softmax_multi.backends.fused`).
"""

from __future__ import annotations

import contextlib

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["address", "fetch_add", "load_acquire", "maxnum", "spin_pause", "wide_vectors"]


@intrinsic
def maxnum(typingctx, a, b):
    """LLVM's maxnum: the larger of a and b, ignoring a NaN. Unlike a compare-and-select, the
    compiler turns a loop of these into a vector reduction."""

    def codegen(context, builder, signature, args):
        t = args[0].type
        return builder.call(builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t])), args)

    return a(a, b), codegen


@intrinsic
def address(typingctx, a):
    """The integer ``a`` as a pointer, for ``numba.carray``: the arrays a task names by address."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(a), codegen


@intrinsic
def fetch_add(typingctx, a, i, v):
    """a[i] += v atomically (a: an int64 array); the value before."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], signature.args[2], types.int64), "seq_cst")

    return types.int64(a, i, v), codegen


@intrinsic
def load_acquire(typingctx, a, i):
    """a[i], read atomically (a: an int64 array)."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def spin_pause(typingctx):
    """The x86 ``pause`` hint for spin loops."""

    def codegen(context, builder, signature, args):
        builder.call(builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), [])), [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the calling function's loops with the widest vectors the CPU has.

    LLVM's tuning for recent Intel CPUs prefers 256-bit vectors even where 512-bit ones exist;
    for these compute-bound loops (exp) the 512 bits were worth 17 % more throughput here. This
    sets the function attribute ``"prefer-vector-width"="512"``; llvmlite knows no such attribute,
    so it is added to the attribute set directly (if that ever fails, nothing changes). A CPU
    without 512-bit vectors keeps its own widths.
    """

    def codegen(context, builder, signature, args):
        with contextlib.suppress(Exception):
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen
