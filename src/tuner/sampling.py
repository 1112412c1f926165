"""Class-balanced batches: supervised contrastive losses need positives in every batch.

``MPerClassSampler`` draws, for every batch, ``batch_size // m`` distinct classes and ``m``
samples of each (without replacement inside a class while it has enough samples, with
replacement for classes smaller than ``m``). Seeded: epoch ``e`` draws from
``np.random.default_rng([seed, e])`` (call :meth:`set_epoch`, as with ``DistributedSampler``),
a generator seeded by the pair, so that every (seed, epoch) pair gets its own stream (with
``seed + epoch``, epoch 1 of seed 0 would repeat epoch 0 of seed 1) and a resumed run sees the
batches of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class MPerClassSampler:
    """A batch sampler (``DataLoader(dataset, batch_sampler=...)``) of ``m`` samples per class.

    Parameters
    ----------
    labels : (N,) class ids of the dataset.
    m : samples per class in a batch (>= 2, so every anchor has a positive).
    batch_size : a multiple of ``m``, with ``batch_size // m`` <= the number of classes.
    batches_per_epoch : default ``N // batch_size`` (at least 1).
    seed : base seed; epoch ``e`` draws from ``np.random.default_rng([seed, e])``.
    """

    def __init__(self, labels, m: int = 4, batch_size: int = 64,
                 batches_per_epoch: int | None = None, seed: int = 0):
        labels = np.asarray(labels).reshape(-1)
        if m < 2:
            raise ValueError(f"m must be at least 2 (an anchor needs a positive), got {m}")
        if batch_size % m:
            raise ValueError(f"batch_size {batch_size} is not a multiple of m={m}")
        self.classes, codes = np.unique(labels, return_inverse=True)
        if batch_size // m > len(self.classes):
            raise ValueError(f"batch_size {batch_size} with m={m} takes {batch_size // m} "
                             f"classes per batch; the labels hold {len(self.classes)}: use a "
                             f"batch_size of at most {m * len(self.classes)}")
        self.members = [np.flatnonzero(codes == c) for c in range(len(self.classes))]
        self.m, self.batch_size, self.seed, self.epoch = m, batch_size, seed, 0
        self.batches_per_epoch = batches_per_epoch or max(1, len(labels) // batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        queues = [rng.permutation(members) for members in self.members]
        positions = [0] * len(queues)
        per_batch = self.batch_size // self.m
        for _ in range(self.batches_per_epoch):
            batch = []
            for c in rng.choice(len(queues), size=per_batch, replace=False):
                members = self.members[c]
                if len(members) < self.m:
                    batch += rng.choice(members, size=self.m, replace=True).tolist()
                    continue
                if positions[c] + self.m > len(queues[c]):
                    queues[c], positions[c] = rng.permutation(members), 0
                batch += queues[c][positions[c]:positions[c] + self.m].tolist()
                positions[c] += self.m
            yield batch


class ShuffledBatches:
    """Batches of ``batch_size`` indices drawn from seeded permutations of ``range(n)`` (a new
    permutation when one runs out): the sampler for cross-entropy and multi-label training.
    ``set_epoch(e)`` reshuffles: epoch ``e`` draws from ``np.random.default_rng([seed, e])``."""

    def __init__(self, n: int, batch_size: int, batches_per_epoch: int | None = None,
                 seed: int = 0):
        if not 1 <= batch_size:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0
        self.batches_per_epoch = batches_per_epoch or max(1, n // batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order, position = rng.permutation(self.n), 0
        for _ in range(self.batches_per_epoch):
            batch = []
            while len(batch) < self.batch_size:
                if position == self.n:
                    order, position = rng.permutation(self.n), 0
                take = min(self.batch_size - len(batch), self.n - position)
                batch += order[position:position + take].tolist()
                position += take
            yield batch


class RankShard:
    """This rank's contiguous slice of every global batch of ``sampler``: rank r of W gets
    ``batch[r·B/W : (r+1)·B/W]``, so gathering the slices in rank order rebuilds the global
    batch exactly (and a W-process run sees the batches of a single-process run)."""

    def __init__(self, sampler, rank: int = 0, world_size: int = 1):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            if len(batch) % self.world_size:
                raise ValueError(f"a batch of {len(batch)} does not split over "
                                 f"{self.world_size} processes")
            size = len(batch) // self.world_size
            yield batch[self.rank * size:(self.rank + 1) * size]
