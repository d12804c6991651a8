"""``checkpoints.validation``: the expected param tree, kept beside the persistent compilation cache so that later
runs skip tracing the model's init, equal to the traced one, never read for another config or when damaged."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from reference import tiny_test_config

from sam2_jax.checkpoints import validation
from sam2_jax.checkpoints.errors import CheckpointError


@pytest.fixture
def compile_cache_dir(tmp_path, monkeypatch):
    """JAX's persistent cache pointed at tmp_path/xla for one test (as ``enable_compile_cache`` does)."""
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla"))
    validation.expected_shapes.cache_clear()
    yield tmp_path
    jax.config.update("jax_compilation_cache_dir", previous)
    validation.expected_shapes.cache_clear()


def _as_rows(shapes):
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in shapes.items()}


def test_stored_tree_equals_the_traced_one_and_skips_tracing(compile_cache_dir, monkeypatch):
    config = tiny_test_config()
    traced = validation.expected_shapes(config, False)
    files = list((compile_cache_dir / "sam2_jax_param_shapes").glob("*.json"))
    assert len(files) == 1
    validation.expected_shapes.cache_clear()
    from sam2_jax.modeling import sam2_model

    def no_tracing(_):
        raise AssertionError("traced the model although the tree was stored")

    monkeypatch.setattr(sam2_model, "param_shapes", no_tracing)
    stored = validation.expected_shapes(config, False)
    assert _as_rows(stored) == _as_rows(traced) and len(stored) > 100
    # another config (one more decoder head) or the video model is another file, built by tracing
    other = dataclasses.replace(
        config, mask_decoder_config=dataclasses.replace(config.mask_decoder_config, iou_head_hidden_dim=48)
    )
    with pytest.raises(AssertionError, match="traced the model"):
        validation.expected_shapes(other, False)


def test_damaged_file_is_rebuilt(compile_cache_dir):
    config = tiny_test_config()
    traced = validation.expected_shapes(config, False)
    (path,) = (compile_cache_dir / "sam2_jax_param_shapes").glob("*.json")
    path.write_text('[["mask_decoder/iou_token/embedding", [1, 32')  # cut short
    validation.expected_shapes.cache_clear()
    assert _as_rows(validation.expected_shapes(config, False)) == _as_rows(traced)
    assert _as_rows(validation.read_shapes(path)) == _as_rows(traced)  # rewritten whole


def test_check_tree_names_every_problem_with_a_stored_tree(compile_cache_dir):
    config = tiny_test_config()
    validation.expected_shapes(config, False)
    validation.expected_shapes.cache_clear()
    shapes = validation.expected_shapes(config, False)  # read back
    params = {k: np.zeros(v.shape, np.float32) for k, v in shapes.items()}
    params[("mask_decoder", "iou_token", "embedding")] = np.zeros((2, 5), np.float32)
    del params[("mask_decoder", "mask_tokens", "embedding")]
    params[("mask_decoder", "extra")] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="(?s)1 missing.*mask_tokens.*1 unexpected.*extra.*1 mis-shaped.*iou"):
        validation.check_params(params, config)


def test_off_without_the_compile_cache(tmp_path):
    previous = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert validation.stored_shapes_file(tiny_test_config(), False) is None
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
