"""Data order as a pure function of the position in the stream, so a resumed run sees the same data."""

from __future__ import annotations

import math
import random
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


def split_heldout(items: list, fraction: float, *, seed: int, keys: list | None = None) -> tuple[list, list]:
    """(train, validation): a seeded shuffle, then ``fraction`` of the items (at least one) held out. With
    ``keys`` (one per item, e.g. its prompt) the split is of the distinct keys, so that items sharing a key
    (comparisons of one prompt) are all on one side; with distinct keys it is the same split."""
    if keys is None:
        keys = list(range(len(items)))
    members: dict = {}
    for item, key in zip(items, keys, strict=True):
        members.setdefault(key, []).append(item)
    distinct = list(members)
    order = list(range(len(distinct)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(distinct) * fraction))
    return ([item for i in order[n_val:] for item in members[distinct[i]]],
            [item for i in order[:n_val] for item in members[distinct[i]]])


def check_split(source: str, train: list, keys: list) -> None:
    """One line instead of a stage with nothing to train on: :func:`split_heldout` holds out whole prompts, so
    data whose comparisons all share one prompt has none left for training."""
    if not train:
        from alignkit.errors import AlignkitError

        raise AlignkitError(f"{source}: all {len(keys)} comparisons have the same prompt, and validation takes whole "
                            "prompts: at least 2 distinct prompts are needed")


def steps_for(cfg, n_train: int) -> int:
    """``cfg.max_steps``, or enough optimizer steps for ``cfg.epochs`` passes over ``n_train`` examples."""
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * n_train / (cfg.batch_size * cfg.grad_accum)))
