"""One thread for all model work, in priority order: ``ModelWorker``.

``submit(priority, fn) -> concurrent.futures.Future``: ``fn()`` runs on the worker thread, lower ``priority``
first (``PREDICT`` < ``EMBED`` < ``PREFETCH`` < ``GENERATE``), equal priorities in submission order; its result or
exception lands in the future. ``run_urgent()``, called from inside a long task (the mask generator's progress
callback), runs the queued ``PREDICT`` tasks there and then, so a click is answered between two batches of a
segment-everything job instead of after it. ``close()`` stops the thread after the task in progress; the
futures of tasks still queued are cancelled.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

PREDICT, EMBED, PREFETCH, GENERATE = 0, 1, 2, 3


class ModelWorker:
    """See the module docstring."""

    def __init__(self, name: str = "sam2-annotate-model"):
        self._heap: list[tuple[int, int, Callable[[], Any], Future]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._urgent = threading.Lock()  # one run_urgent at a time
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the model worker is closed")
            heapq.heappush(self._heap, (priority, next(self._seq), fn, future))
            self._cond.notify()
        return future

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _pop(self, max_priority: int | None, block: bool):
        with self._cond:
            while True:
                if self._heap and (max_priority is None or self._heap[0][0] <= max_priority):
                    return heapq.heappop(self._heap)
                if self._closed or not block:
                    return None
                self._cond.wait()

    @staticmethod
    def _run(fn: Callable[[], Any], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            future.set_exception(e)

    def _loop(self) -> None:
        while (item := self._pop(None, block=True)) is not None:
            self._run(item[2], item[3])

    def run_urgent(self) -> None:
        """Run the queued PREDICT tasks now (from inside a running task)."""
        if not self._urgent.acquire(blocking=False):
            return
        try:
            while (item := self._pop(PREDICT, block=False)) is not None:
                self._run(item[2], item[3])
        finally:
            self._urgent.release()

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            left, self._heap = self._heap, []
            self._cond.notify_all()
        for *_, future in left:
            future.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
