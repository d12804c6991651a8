"""``Trainer`` over ``jax.distributed``: two processes x 2 CPU devices (gloo on 127.0.0.1) train (embeddings of
the frozen encoder computed, partly cached, cached), checkpoint (orbax, collectively), evaluate and resume exactly
as one process with 4 devices; ``DataLoader(rows=)`` gives each process its rows of the single loader's batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
from multihost_train_worker import STEPS, run

from sam2_jax.training.data import SegmentationDataset
from sam2_jax.training.loader import DataLoader
from sam2_jax.training.synthetic import write_shapes_dataset
from sam2_jax.training.train_state import RunDirectory


def test_process_loader_rows_are_the_global_batch(tmp_path):
    """Rows 0:2 and 2:4 of batches of 4 over 6 images (an epoch of one batch, then the next epoch's order),
    concatenated, are the single loader's batches; the state is the single loader's; a resumed one continues."""
    ds = SegmentationDataset.from_directory(write_shapes_dataset(tmp_path / "d", 6, (40, 48), seed=0))
    opts = dict(image_size=64, mask_size=16, max_objects=2, seed=4)
    whole = DataLoader(ds, 4, **opts)
    parts = [DataLoader(ds, 4, rows=(0, 2), **opts), DataLoader(ds, 4, rows=(2, 4), **opts)]
    for _ in range(3):
        expected, got = next(whole), [next(p) for p in parts]
        for k in ("pixel_values", "masks", "valid", "index"):
            np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), expected[k], err_msg=k)
        assert parts[0].state() == parts[1].state() == whole.state()
    resumed = DataLoader(ds, 4, rows=(2, 4), state=whole.state(), **opts)
    np.testing.assert_array_equal(next(resumed)["index"], next(whole)["index"][2:])
    for loader in (whole, resumed, *parts):
        loader.close()


def test_two_processes_equal_one(tmp_path):
    """The two processes' params (bit for bit the same on both), losses and held-out mIoU equal the one-process run
    with 4 devices (to 1e-6 relative); only one process wrote OUT (each metrics row once) and both resume from it,
    at the one-process run's loader position."""
    data = write_shapes_dataset(tmp_path / "data", 4, (48, 64), seed=0)
    held = write_shapes_dataset(tmp_path / "held", 4, (48, 64), seed=1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    worker = os.path.join(os.path.dirname(__file__), "multihost_train_worker.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(i), port, str(data), str(held), str(out), str(tmp_path / f"r{i}.npz")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:  # the reference meanwhile: one process, 4 of its 8 devices
        expected = run(str(data), str(held), str(tmp_path / "ref"), devices=jax.devices()[:4])
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    results = [dict(np.load(tmp_path / f"r{i}.npz")) for i in range(2)]
    # one process: every image cached after step 1 (4 x 3 hits); two: each caches its own rows (grain's orders
    # 1023, 2013, 2013, 2130): hits 0+1+2+2 and 0+1+2+1, step 4 encoded on both though the first had its rows
    assert expected["cache_hits"] == 12 and [int(r["cache_hits"]) for r in results] == [5, 4]
    for i, r in enumerate(results):
        assert r["rows"].tolist() == [2 * i, 2 * i + 2]
        assert (
            r["resumed_step"] == STEPS and r["resumed_same"] and r["resumed_position"] == expected["resumed_position"]
        )
    keys = [k for k in results[0] if k.startswith("param:")]
    assert all(np.array_equal(results[0][k], results[1][k]) for k in keys)
    got = {k[len("param:") :]: results[0][k] for k in keys}
    ref = expected["params"]
    errors = {k: float(np.linalg.norm(got[k] - v) / max(np.linalg.norm(v), 1e-30)) for k, v in ref.items()}
    # k_proj biases have a zero true gradient (softmax is shift-invariant): Adam's update of rounding noise
    noise = [k for k in ref if "k_proj" in k and k.endswith("['bias']")]
    worst = max(v for k, v in errors.items() if k not in noise)
    print(
        f"[multihost] 2 processes x 2 devices vs 1 x 4 after {STEPS} steps: params max rel L2 {worst:.1e} (k_proj "
        f"biases {max(errors[k] for k in noise):.1e}), losses {results[0]['losses']} vs {expected['losses']}, "
        f"mIoU {results[0]['miou']:.6f} vs {expected['miou']:.6f}"
    )
    assert worst < 1e-6 and expected["moved"] > 30 and results[0]["moved"] == expected["moved"]
    np.testing.assert_allclose(results[0]["losses"], expected["losses"], rtol=1e-6)
    np.testing.assert_allclose(results[1]["losses"], results[0]["losses"], rtol=0)
    assert abs(float(results[0]["miou"]) - float(expected["miou"])) < 1e-6
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # a second writer would have appended every row twice
    assert expected["resumed_position"] == STEPS  # grain's state: every batch consumed once
    assert RunDirectory(out).steps() == RunDirectory(tmp_path / "ref").steps() == [2, 4]
    # grain's handler wrote one loader state per process, each the whole loader's (the same position)
    files = sorted(p.name for p in (out / "checkpoints" / "4" / "data_iter").glob("*.json"))
    assert files == ["process_0-of-2.json", "process_1-of-2.json"]
    states = [json.loads((out / "checkpoints" / "4" / "data_iter" / f).read_text()) for f in files]
    ref = json.loads((tmp_path / "ref" / "checkpoints" / "4" / "data_iter" / "process_0-of-1.json").read_text())
    assert states[0] == states[1] == ref and ref["iterator"] == {"next_index": STEPS}
