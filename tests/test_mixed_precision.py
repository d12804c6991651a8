"""bf16 products with float32 accumulation: the CPU mode's detection, and both modes against float32 math."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam2_jax.modeling import mixed_precision as mp
from sam2_jax.modeling.layers import Dense


@pytest.fixture
def fresh_mode(monkeypatch):
    """Clear the per-process cache before and after, so that a test's environment decides the mode."""
    mp.cpu_bf16_mode.cache_clear()
    yield monkeypatch
    mp.cpu_bf16_mode.cache_clear()


def _operands(shape_a, shape_b, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape_a).astype(np.float32), rng.normal(size=shape_b).astype(np.float32)


def test_mode_follows_environment_and_cpu_flags(fresh_mode):
    fresh_mode.setenv(mp.ENV, "upcast")
    assert mp.cpu_bf16_mode() == "upcast"
    mp.cpu_bf16_mode.cache_clear()
    fresh_mode.setenv(mp.ENV, "native")
    assert mp.cpu_bf16_mode() == "native"
    mp.cpu_bf16_mode.cache_clear()
    fresh_mode.setenv(mp.ENV, "fast")
    with pytest.raises(ValueError, match="SAM2_JAX_CPU_BF16"):
        mp.cpu_bf16_mode()
    mp.cpu_bf16_mode.cache_clear()
    fresh_mode.delenv(mp.ENV)
    fresh_mode.setattr(mp, "cpu_flags", lambda: {"avx2", "fma"})  # a CPU without bf16 instructions
    assert mp.cpu_bf16_mode() == "upcast"
    mp.cpu_bf16_mode.cache_clear()
    fresh_mode.setattr(mp, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    fresh_mode.setattr(mp, "probe_bf16", lambda: False)  # flags present, but XLA refuses the mixed product
    assert mp.cpu_bf16_mode() == "upcast"


def test_this_machine_detection_is_consistent(fresh_mode):
    """Whatever the CPU, "native" is only chosen where the mixed product really runs."""
    fresh_mode.delenv(mp.ENV, raising=False)
    mode = mp.cpu_bf16_mode()
    print(f"[bf16] this CPU: {mode}; flags {sorted({'avx512_bf16', 'amx_bf16'} & mp.cpu_flags())}")
    assert mode == ("native" if {"avx512_bf16", "amx_bf16"} & mp.cpu_flags() and mp.probe_bf16() else "upcast")


def test_float32_is_untouched():
    a, b = _operands((3, 5, 16), (3, 7, 16))
    for fn in (mp.einsum_f32, mp.einsum):
        np.testing.assert_array_equal(fn("bqd,bkd->bqk", a, b), jnp.einsum("bqd,bkd->bqk", a, b))
    x, w = _operands((4, 9, 24), (24, 12))
    dense = Dense(12)
    params = dense.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(dense.apply(params, x), nn.Dense(12).apply(params, x))


@pytest.mark.parametrize("mode", mp.MODES)
def test_bf16_products_accumulate_in_float32(fresh_mode, mode):
    """Both modes: the bf16 operands' exact product summed in f32 (einsum_f32), rounded once to bf16 (einsum)."""
    fresh_mode.setenv(mp.ENV, mode)
    a, b = _operands((2, 64, 96), (2, 80, 96), seed=1)
    a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
    exact = np.einsum("bqd,bkd->bqk", np.asarray(a16, np.float64), np.asarray(b16, np.float64))
    out = jax.jit(lambda x, y: mp.einsum_f32("bqd,bkd->bqk", x, y))(a16, b16)
    assert out.dtype == jnp.float32
    assert np.abs(np.asarray(out) - exact).max() <= 1e-4 * np.abs(exact).max()
    rounded = jax.jit(lambda x, y: mp.einsum("bqd,bkd->bqk", x, y))(a16, b16)
    assert rounded.dtype == jnp.bfloat16
    assert np.abs(np.asarray(rounded, np.float64) - exact).max() <= 2**-8 * np.abs(exact).max()


@pytest.mark.parametrize("mode", mp.MODES)
def test_dense_layer_in_bf16(fresh_mode, mode):
    fresh_mode.setenv(mp.ENV, mode)
    x, _ = _operands((2, 300, 192), (1,), seed=2)
    dense = Dense(384, dtype=jnp.bfloat16)
    params = dense.init(jax.random.PRNGKey(1), x)
    out = jax.jit(dense.apply)(params, x)
    assert out.dtype == jnp.bfloat16
    k = params["params"]["kernel"]
    bias = np.asarray(params["params"]["bias"], np.float64)
    x16 = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
    k16 = np.asarray(jnp.asarray(k, jnp.bfloat16), np.float64)
    exact = x16 @ k16 + bias
    err = np.abs(np.asarray(out, np.float64) - exact).max() / np.abs(exact).max()
    assert err <= 2**-7, err
