"""Data-parallel segmentation on 8 simulated CPU devices (XLA_FLAGS set in conftest before jax is imported)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from compile_count import count_compiles
from conftest import assert_rel_close

from sam2_jax.frontends.image.batch_segmenter import BatchSegmenter


def params_replicated(segmenter: BatchSegmenter) -> bool:
    """True when every param leaf already lives on all of the segmenter's devices (nothing to send per call)."""
    devices = set(segmenter.devices)
    leaves = jax.tree_util.tree_leaves(segmenter.params)
    return all(isinstance(leaf, jax.Array) and set(leaf.devices()) == devices for leaf in leaves)


def param_buffers(segmenter: BatchSegmenter) -> list[int]:
    """Device buffer addresses of every param shard: unchanged between calls when params are not re-sent."""
    return [
        shard.data.unsafe_buffer_pointer()
        for leaf in jax.tree_util.tree_leaves(segmenter.params)
        for shard in leaf.addressable_shards
    ]


@pytest.fixture(scope="module")
def batch(small_ref):
    rng = np.random.default_rng(0)
    s = small_ref.size
    b = 5  # not a multiple of the device count: padded and dropped
    return dict(
        pixel_values=rng.standard_normal((b, s, s, 3)).astype(np.float32),
        input_points=rng.uniform(0, s, (b, 2, 3, 2)).astype(np.float32),
        input_labels=np.tile(np.array([[1, 0, -10], [1, 1, 1]]), (b, 1, 1)),
        input_boxes=rng.uniform(0, s / 2, (b, 2, 4)).astype(np.float32) + np.array([0, 0, s / 2, s / 2], np.float32),
    )


def test_eight_devices_are_simulated():
    assert jax.device_count() == 8, "conftest must set XLA_FLAGS before jax is imported"


@pytest.mark.parametrize("mode", ["sharded", "pmap"])
def test_matches_single_device(small_ref, batch, mode):
    single = small_ref.apply(small_ref.params, **batch)
    seg = BatchSegmenter(small_ref.model, small_ref.params, mode=mode)
    out = seg(**batch)
    assert out["pred_masks"].shape == single.pred_masks.shape
    assert_rel_close(out["pred_masks"], single.pred_masks, 1e-5, f"{mode} masks")
    assert_rel_close(out["iou_scores"], single.iou_scores, 1e-5, f"{mode} iou")
    assert_rel_close(out["object_score_logits"], single.object_score_logits, 1e-5, f"{mode} object scores")


@pytest.mark.parametrize("mode", ["sharded", "pmap"])
def test_second_call_reuses_compilation_and_params(small_ref, batch, mode):
    seg = BatchSegmenter(small_ref.model, small_ref.params, mode=mode)
    assert params_replicated(seg)
    before = param_buffers(seg)
    seg(**batch)
    other = {k: v[::-1].copy() for k, v in batch.items()}  # new images, same shapes
    with count_compiles() as compiles:
        seg(**other)
    assert compiles.n == 0
    assert param_buffers(seg) == before  # the same device buffers: params were not re-sent


def test_bad_batch(small_ref, batch):
    seg = BatchSegmenter(small_ref.model, small_ref.params)
    with pytest.raises(ValueError, match="rows for 5 images"):
        seg(batch["pixel_values"], input_points=batch["input_points"][:3], input_labels=batch["input_labels"][:3])
    with pytest.raises(ValueError, match="unknown prompt arguments"):
        seg(batch["pixel_values"], points=batch["input_points"])


def test_two_hosts_on_loopback(tmp_path):
    """Two processes x 2 CPU devices joined by jax.distributed on 127.0.0.1 give the single-device answer."""
    import os
    import socket
    import subprocess
    import sys

    from multihost_inputs import inputs
    from reference import random_params, tiny_test_config

    from sam2_jax import Sam2Model

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    here = os.path.dirname(__file__)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(here, "multihost_worker.py"), str(i), port, str(tmp_path / f"out{i}.npz")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    config = tiny_test_config()
    params = random_params(config, seed=0, video=False)  # as the workers draw them
    expected = Sam2Model(config).apply({"params": params}, **inputs(config))
    for i in range(2):
        got = np.load(tmp_path / f"out{i}.npz")
        assert_rel_close(got["pred_masks"], expected.pred_masks, 1e-5, f"host {i} masks")
        assert_rel_close(got["iou_scores"], expected.iou_scores, 1e-5, f"host {i} iou")
