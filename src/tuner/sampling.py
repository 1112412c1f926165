"""Class-balanced batches: supervised contrastive losses need positives in every batch.

``MPerClassSampler`` draws, for every batch, ``batch_size // m`` distinct classes and ``m``
samples of each (without replacement inside a class while it has enough samples, with
replacement for classes smaller than ``m``). Seeded; each epoch reshuffles with ``seed +
epoch`` (call :meth:`set_epoch`, as with ``DistributedSampler``).
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
    seed : base seed.
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
            raise ValueError(f"a batch of {batch_size // m} classes needs that many classes; "
                             f"the labels hold {len(self.classes)}")
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
