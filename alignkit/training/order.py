"""Data order as a pure function of the position in the stream, so a resumed run sees the same data."""

from __future__ import annotations

from functools import lru_cache

import torch


class EpochOrder:
    """An endless stream of example indices: a fresh seeded permutation of ``range(n)`` per epoch."""

    def __init__(self, n: int, *, seed: int):
        self.n, self.seed = n, seed

    @lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs, lives as long as the stage
    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def indices(self, first: int, count: int) -> torch.Tensor:
        """Indices at stream positions ``first .. first + count - 1``."""
        pos = torch.arange(first, first + count)
        epochs, offsets = pos // self.n, pos % self.n
        return torch.stack([self._perm(int(e))[int(o)] for e, o in zip(epochs, offsets)])
