"""``utils/compile_cache.py``: the second run of a front end reads its compiled programs from the persistent cache.

Two fresh processes load the same small converted checkpoint with ``Sam2ImagePredictor.from_pretrained`` and
answer one click; JAX's own monitoring events, counted from outside the library, show that the first compiles
and fills the cache directory, and the second hits it for the encoder and the decoder instead of compiling.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from sam2_jax.utils.compile_cache import ENV, default_cache_dir, enable_compile_cache

RUN = r"""
import sys, jax, numpy as np
counts = {"hits": 0, "compiles": 0}
def listen(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        counts["hits"] += 1
def listen_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        counts["compiles"] += 1
jax.monitoring.register_event_listener(listen)
jax.monitoring.register_event_duration_secs_listener(listen_duration)
from sam2_jax import Sam2ImagePredictor
predictor = Sam2ImagePredictor.from_pretrained(sys.argv[1])
predictor.set_image(np.full((64, 96, 3), 100, np.uint8))
masks, scores, _ = predictor.predict(point_coords=[[40, 30]], point_labels=[1])
print("RESULT", counts["hits"], counts["compiles"], jax.config.jax_compilation_cache_dir, float(scores.sum()))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from reference import random_params, tiny_test_config

    from sam2_jax import save_converted

    config = tiny_test_config()
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_converted(path, config, random_params(config, video=False))
    return path


def _run(checkpoint, cache):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env[ENV] = str(cache)
    out = subprocess.run([sys.executable, "-c", RUN, str(checkpoint)], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    _, hits, compiles, directory, score = line.split()
    return int(hits), int(compiles), directory, float(score)


def test_second_run_reads_the_cache(checkpoint, tmp_path):
    cache = tmp_path / "xla"
    hits1, compiles1, dir1, score1 = _run(checkpoint, cache)
    assert dir1 == str(cache) and hits1 == 0
    entries = sorted(p.name for p in cache.iterdir())
    assert any("encode" in e for e in entries) and any("decode" in e for e in entries), entries
    hits2, compiles2, _, score2 = _run(checkpoint, cache)
    print(f"first run: {compiles1} programs, {len(entries)} cached; second: {hits2} read from the cache")
    assert hits2 >= 2, "the encoder and the decoder come from the cache"
    assert score2 == score1


def test_opt_out_and_user_setting(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "off")
    assert enable_compile_cache() is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "sam2_jax" / "xla"
    monkeypatch.setenv(ENV, "")
    before = jax.config.jax_compilation_cache_dir
    if before:  # the user's own setting wins
        assert enable_compile_cache() == type(default_cache_dir())(before)
