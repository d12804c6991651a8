"""bfloat16 products with float32 accumulation, on every platform that has them natively.

In: two operands (float32, or bfloat16 when a model runs with ``dtype=jnp.bfloat16``). Out: their product,
accumulated in float32; ``einsum_f32`` returns float32, ``dot_general`` / ``einsum`` return the operands' dtype
(the float32 sum rounded once), as a bf16 layer should.

Accelerators multiply bf16 x bf16 into f32 natively. On CPU, XLA decides per product, in context, whether its
matmul library (YNNPACK) takes it; a mixed bf16 x bf16 -> f32 product that it leaves to the fallback kernel
fails at run time ("Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32"). It takes the plain
(rows, in) x (in, out) products of dense layers on processors with bf16 instructions (AVX512-BF16, AMX), where
they run about twice as fast as float32, but not every batched product (one of the mask decoder's, contracting
the middle axis, fell to the fallback). So on CPU:

* ``dot_general`` (``layers.Dense``, most of the encoder's FLOPs) multiplies natively when ``cpu_bf16_mode()``
  is "native", and otherwise leaves the bf16 product to XLA as before;
* ``einsum_f32`` upcasts the operands to float32 and ``einsum`` leaves the product to XLA, always.

``cpu_bf16_mode()`` is decided once per process: "native" where ``/proc/cpuinfo`` lists ``avx512_bf16`` or
``amx_bf16`` and a small mixed product compiles and runs, "upcast" otherwise; ``SAM2_JAX_CPU_BF16=native|upcast``
overrides it. float32 operands are never affected: a float32 model computes exactly what ``jnp.einsum`` /
``lax.dot_general`` compute.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

ENV = "SAM2_JAX_CPU_BF16"
MODES = ("native", "upcast")

__all__ = ["ENV", "cpu_bf16_mode", "dot_general", "einsum", "einsum_f32"]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def probe_bf16() -> bool:
    """Whether XLA:CPU compiles and runs mixed bf16 x bf16 -> f32 products (a matrix and a batched one)."""
    try:
        with jax.ensure_compile_time_eval():  # called while a model is traced: run the probe, do not stage it
            cpu = jax.devices("cpu")[0]
            a = jax.device_put(jnp.ones((2, 3, 8), jnp.bfloat16), cpu)
            b = jax.device_put(jnp.ones((2, 5, 8), jnp.bfloat16), cpu)
            f32 = jnp.float32
            out = jax.jit(lambda x, y: jnp.einsum("bqd,bkd->bqk", x, y, preferred_element_type=f32))(a, b)
            out2 = jax.jit(lambda x, y: jnp.dot(x[0], y[0].T, preferred_element_type=f32))(a, b)
            return bool(jnp.all(out == 8.0)) and bool(jnp.all(out2 == 8.0))
    except Exception:  # XlaRuntimeError and friends: the fallback kernel lacks the mixed form
        return False


@functools.cache
def cpu_bf16_mode() -> str:
    """ "native" or "upcast": how bf16 products run on CPU in this process (see the module docstring)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"{ENV} must be one of {MODES}, got {forced!r}")
        return forced
    if {"avx512_bf16", "amx_bf16"} & cpu_flags() and probe_bf16():
        return "native"
    return "upcast"


def _mixed(a: jax.Array, b: jax.Array) -> bool:
    return not (a.dtype == jnp.float32 and b.dtype == jnp.float32)


def einsum_f32(equation: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """Two-operand einsum with a float32 result (float32 accumulation for bfloat16 operands); on CPU the bf16
    operands are upcast (see the module docstring for why only dense layers take the native product there)."""
    if not _mixed(a, b):
        return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32)

    def upcast(x, y):
        return jnp.einsum(equation, x.astype(jnp.float32), y.astype(jnp.float32))

    native = functools.partial(jnp.einsum, equation, preferred_element_type=jnp.float32)
    return jax.lax.platform_dependent(a, b, cpu=upcast, default=native)


def einsum(equation: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``jnp.einsum`` in the operands' dtype, accumulated in float32 on accelerators (XLA's own bf16 product on
    CPU)."""
    if not _mixed(a, b):
        return jnp.einsum(equation, a, b)
    dtype = jnp.result_type(a, b)
    native = lambda x, y: jnp.einsum(equation, x, y, preferred_element_type=jnp.float32).astype(dtype)  # noqa: E731
    return jax.lax.platform_dependent(a, b, cpu=functools.partial(jnp.einsum, equation), default=native)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """``lax.dot_general`` for ``flax.linen.Dense(dot_general=...)``: bf16 operands accumulate in float32 where
    the platform does that natively, and the result comes back in the operands' dtype."""
    plain = functools.partial(
        jax.lax.dot_general,
        dimension_numbers=dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
        **kwargs,
    )
    if not _mixed(lhs, rhs) or preferred_element_type is not None:
        return plain(lhs, rhs)
    dtype = jnp.result_type(lhs, rhs)

    def native(x, y):
        out = jax.lax.dot_general(
            x, y, dimension_numbers, precision=precision, preferred_element_type=jnp.float32, **kwargs
        )
        return out.astype(dtype)

    if cpu_bf16_mode() == "native":
        return native(lhs, rhs)
    return jax.lax.platform_dependent(lhs, rhs, cpu=plain, default=native)
