"""Multi-host data parallelism for the ``Trainer``: global arrays from each process's rows, results gathered,
one writer, barriers (a process's share of every batch: ``DataLoader(..., rows=process_rows(...))``).

After ``jax.distributed.initialize()`` a mesh over ``jax.devices()`` spans every process's devices. Each process
runs the same program: it feeds only the rows of the global batch its own devices hold (``process_rows``:
one contiguous range, as a one-axis mesh over ``jax.devices()`` orders devices by process), params and optimizer
state are replicated on every device of every process, and the jitted step's gradient mean spans the whole global
batch, so a run equals the same run on one process with as many devices (up to the order of float sums).

  spans_processes(mesh) -> bool: the mesh has devices of more than one process
  process_rows(sharding, rows) -> (start, stop): the rows of a ``rows``-long batch axis this process's devices hold
  put_rows(tree, sharding, rows) -> global ``jax.Array``s from this process's rows (NumPy, (stop - start, ...)
        each; a leaf that already is a global ``jax.Array`` of ``rows`` rows is kept)
  host_put(x, sharding) -> a global ``jax.Array`` from a host array every process holds in full (each process
        sends only its devices' parts)
  gather(x) -> NumPy: the full value of a global array, on every process (``process_allgather``)
  local_rows(x) -> NumPy (stop - start, ...): this process's rows of a batch-sharded global array, in order
  all_true(flag, multi) -> bool: ``flag`` and-ed over the processes (``flag`` itself when not ``multi``)
  is_writer(mesh) -> bool: the lowest process of the mesh, the one that writes files
  barrier(name, multi): every process waits until all reach the barrier of this name (nothing when not ``multi``)
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, Sharding

__all__ = [
    "all_true",
    "barrier",
    "gather",
    "host_put",
    "is_writer",
    "local_rows",
    "process_rows",
    "put_rows",
    "spans_processes",
]


def spans_processes(mesh: Mesh) -> bool:
    return len({d.process_index for d in mesh.devices.flat}) > 1


def is_writer(mesh: Mesh) -> bool:
    return jax.process_index() == min(d.process_index for d in mesh.devices.flat)


def process_rows(sharding: Sharding, rows: int) -> tuple[int, int]:
    """(start, stop) of the rows (axis 0, ``rows`` long) this process's devices hold under ``sharding``; a
    ``ValueError`` when they are not one contiguous range or this process holds none."""
    me = jax.process_index()
    spans = set()
    for device, index in sharding.devices_indices_map((rows,)).items():
        if device.process_index == me:
            spans.add(index[0].indices(rows)[:2])
    spans = sorted(spans)
    if not spans or any(a[1] != b[0] for a, b in zip(spans, spans[1:], strict=False)):
        raise ValueError(f"process {me} holds rows {spans} of the batch: not one contiguous range")
    return spans[0][0], spans[-1][1]


def host_put(x, sharding: Sharding) -> jax.Array:
    """A host array, the same on every process, onto ``sharding``'s devices (each process sends its parts)."""
    x = np.asarray(x)
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_rows(tree, sharding: Sharding, rows: int):
    """Each leaf: this process's rows (host array) -> a global array of ``rows`` rows sharded by ``sharding``."""

    def put(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and x.shape[0] == rows:
            return x
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (rows, *x.shape[1:]))

    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(put, tree)


def gather(x) -> np.ndarray:
    """The full value of an array on every process (a collective: every process must call it)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a global array sharded along axis 0, in order."""
    if x.is_fully_addressable:
        return np.asarray(x)
    parts = {s.index[0].indices(x.shape[0])[0]: s.data for s in x.addressable_shards}
    return np.concatenate([np.asarray(parts[k]) for k in sorted(parts)])


def all_true(flag: bool, multi: bool) -> bool:
    """``flag`` on every process (a collective when ``multi``)."""
    if not multi:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def barrier(name: str, multi: bool) -> None:
    if multi:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
