"""An LRU of image embeddings on the host, for training with a frozen image encoder (``Trainer``).

EmbeddingCache(max_bytes): dataset index -> the three arrays ``Sam2Model.get_image_embeddings`` gives for one image
(feat_s0, feat_s1, image_embedding, NumPy, without the batch axis), at most ``max_bytes`` in all (one 1024-px image
takes 16 MiB in float32, 8 MiB in bfloat16); the least recently used go first. ``get(index)`` -> the arrays or None
(counted in ``hits`` / ``misses``); ``put(index, arrays)`` stores them unless already there or larger than the
whole budget; ``len(cache)``, ``nbytes``.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """See the module docstring."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.nbytes, self.hits, self.misses = int(max_bytes), 0, 0, 0
        self._items: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, index: int):
        value = self._items.get(index)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self._items.move_to_end(index)
        return value

    def put(self, index: int, value: tuple) -> None:
        size = sum(a.nbytes for a in value)
        if size > self.max_bytes or index in self._items:
            return
        self._items[index] = value
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.nbytes -= sum(a.nbytes for a in old)
