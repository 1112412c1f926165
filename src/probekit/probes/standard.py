"""Standardised rows for the linear probes, in bounded memory.

The linear probes fit on ``z = (x − μ) / σ``, with the training mean μ and standard deviation σ
of every feature (a feature with σ = 0 is only centred, as in scikit-learn's
``StandardScaler``). The rows are read block by block from their source (an array or a memory
map of any float dtype, possibly through an index of rows) and standardised in float64, then
rounded to float32::

    z_ij = float32((float64(x_ij) − μ_j) / σ_j)

:class:`StandardRows` yields them as float32 blocks, either from one standardised copy, made
when it fits a memory budget (:func:`hold`), or standardised again from the source at every
pass (streamed). Both give the same float32 values, so a computation that walks the same
blocks gives the same bits either way.

A row lying more than :func:`probekit.arrays.float32_limit` standard deviations from the
training mean in some feature cannot be held by the float32 probes: :func:`fit_scaling` and
:func:`check_rows` raise :class:`InputError` naming how many such rows there are (an outlier of
that size would otherwise turn into inf and a meaningless prediction).

The statistics and the checks pass over a fixed grid of row blocks (:func:`scaling_blocks`),
adding the blocks' float64 sums in block order. In a sharded run (:mod:`probekit.ranks`) each
rank reads and sums only its share of the blocks and every rank adds all the blocks' sums in
the same order, so every rank gets one process's statistics, bit for bit; the objectives'
passes (:meth:`StandardRows.blocks` with ``numbers``) are split the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probekit.arrays import float32_limit, row_chunks
from probekit.errors import InputError
from probekit.ranks import SINGLE, Ranks

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of standardised float32 rows held at once: 1 GiB
BLOCK_ELEMENTS = 1 << 22  # values per block of an objective's pass (16 MiB of float32)


@dataclass(frozen=True)
class Scaling:
    """The training mean and standard deviation of every feature, float64 ``(D,)`` each
    (``scale`` is 1 where the standard deviation is 0)."""

    mean: np.ndarray
    scale: np.ndarray

    def apply(self, block: np.ndarray) -> np.ndarray:
        """``float32((float64(block) − mean) / scale)``."""
        out = np.array(block, dtype=np.float64)
        out -= self.mean
        out /= self.scale
        return out.astype(np.float32)


def block_rows(dim: int, outputs: int, elements: int | None = None) -> int:
    """Rows per block of an objective's pass: at most ``elements`` (default
    :data:`BLOCK_ELEMENTS`, read at each call so tests can shrink it) values in a block of
    features and in its block of logits."""
    return max(1, (elements or BLOCK_ELEMENTS) // max(1, dim, outputs))


def scaling_blocks(n_rows: int, dim: int) -> list[tuple[int, int]]:
    """The fixed grid of row blocks (:data:`BLOCK_ELEMENTS` values each, read at each call)
    over which :func:`fit_scaling` and :func:`check_rows` pass: it depends on the shape alone,
    so the ranks of a sharded run split it into whole blocks and add the blocks' sums in block
    order, exactly as one process adds them."""
    return list(row_chunks(n_rows, dim, BLOCK_ELEMENTS))


def per_rank(ranks: Ranks, work):
    """Every rank's ``work()`` in rank order: through :meth:`Ranks.agree` when sharded (a
    failure on one rank is one :class:`InputError` line on all), ``[work()]`` otherwise (its
    exceptions unchanged)."""
    return ranks.agree(work) if ranks.sharded else [work()]


def alike(ranks: Ranks, work):
    """``work()``, which every rank does alike on the same rows (scoring the validation or the
    test rows): when sharded, its outcome is agreed (:meth:`Ranks.agree`; nothing but the
    outcome is gathered), so a failure on one rank is one :class:`InputError` line on all
    instead of the others waiting for it in their next collective."""
    if not ranks.sharded:
        return work()
    done = []
    ranks.agree(lambda: done.append(work()))
    return done[0]


def _read(X: np.ndarray, rows: np.ndarray | None, start: int, stop: int) -> np.ndarray:
    return X[start:stop] if rows is None else X[rows[start:stop]]


def _my_blocks(X: np.ndarray, rows: np.ndarray | None, ranks: Ranks):
    """Yield this rank's share of the :func:`scaling_blocks` of ``X[rows]``, in block order
    (all of them in one process)."""
    grid = scaling_blocks(X.shape[0] if rows is None else len(rows), X.shape[1])
    for number in ranks.share(len(grid)):
        yield _read(X, rows, *grid[number])


def _extremes(X, rows, ranks: Ranks) -> tuple[np.ndarray, np.ndarray]:
    """The minimum and maximum of every column of ``X[rows]`` (±inf without rows): each rank
    passes over its blocks, the ranks' extremes are combined (exactly, in any order)."""
    def mine():
        low = np.full(X.shape[1], np.inf)
        high = np.full(X.shape[1], -np.inf)
        for block in _my_blocks(X, rows, ranks):
            if len(block):
                low = np.minimum(low, block.min(axis=0))
                high = np.maximum(high, block.max(axis=0))
        return low, high

    low = np.full(X.shape[1], np.inf)
    high = np.full(X.shape[1], -np.inf)
    for part_low, part_high in per_rank(ranks, mine):
        low = np.minimum(low, part_low)
        high = np.maximum(high, part_high)
    return low, high


def fit_scaling(X: np.ndarray, rows: np.ndarray | None = None, *,
                which: str = "training", ranks: Ranks = SINGLE) -> Scaling:
    """The mean and standard deviation of ``X[rows]`` (all rows when None), in two passes
    over the :func:`scaling_blocks` (no float64 copy of the data is made): the float64 sums of
    every block, added in block order; :class:`InputError` when a row lies beyond what float32
    can hold after standardisation (see the module docstring).

    With ``ranks`` sharded (:mod:`probekit.ranks`; every rank calls with the same arguments)
    each rank reads and sums its share of the blocks only, and every rank adds all the blocks'
    sums in block order: the result is one process's, bit for bit."""
    n = X.shape[0] if rows is None else len(rows)

    def first() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        low = np.full(X.shape[1], np.inf)
        high = np.full(X.shape[1], -np.inf)
        sums = []
        for block in _my_blocks(X, rows, ranks):
            sums.append(block.sum(axis=0, dtype=np.float64))
            if len(block):
                low = np.minimum(low, block.min(axis=0))
                high = np.maximum(high, block.max(axis=0))
        return sums, low, high

    total = np.zeros(X.shape[1])
    low = np.full(X.shape[1], np.inf)
    high = np.full(X.shape[1], -np.inf)
    for sums, part_low, part_high in per_rank(ranks, first):
        for block_sum in sums:  # rank order, each rank's blocks in order: block order
            total += block_sum
        low = np.minimum(low, part_low)
        high = np.maximum(high, part_high)
    mean = total / n

    def second() -> list[np.ndarray]:
        sums = []
        for block in _my_blocks(X, rows, ranks):
            centred = block - mean  # one float64 temporary per block, squared in place
            centred *= centred
            sums.append(centred.sum(axis=0))
        return sums

    squares = np.zeros(X.shape[1])
    for sums in per_rank(ranks, second):
        for block_sum in sums:
            squares += block_sum
    scale = np.sqrt(squares / n)
    scale[scale == 0] = 1.0
    scaling = Scaling(mean, scale)
    _check_extremes(X, rows, scaling, low, high, which, ranks)
    return scaling


def check_rows(X: np.ndarray, rows: np.ndarray | None, scaling: Scaling, *,
               which: str = "test", ranks: Ranks = SINGLE) -> None:
    """:class:`InputError` when a row of ``X[rows]`` lies beyond what float32 can hold after
    standardisation by ``scaling`` (one pass over the rows; sharded as in
    :func:`fit_scaling`)."""
    low, high = _extremes(X, rows, ranks)
    _check_extremes(X, rows, scaling, low, high, which, ranks)


def _check_extremes(X, rows, scaling: Scaling, low, high, which: str,
                    ranks: Ranks = SINGLE) -> None:
    """Standardisation is monotone in each feature (and so is its rounding), so some row is
    too far exactly when a column's minimum or maximum is: only then are the rows counted
    (each rank counting in its blocks; every rank raises the same line)."""
    limit = float32_limit(X.shape[1])
    if not np.isfinite(low).any():  # no rows
        return
    far = max(np.max(np.abs((high - scaling.mean) / scaling.scale)),
              np.max(np.abs((low - scaling.mean) / scaling.scale)))
    if far <= limit:
        return

    def count() -> int:
        return sum(int(np.count_nonzero(
            (np.abs((block - scaling.mean) / scaling.scale) > limit).any(axis=1)))
            for block in _my_blocks(X, rows, ranks))

    outliers = sum(per_rank(ranks, count))
    raise InputError(
        f"{outliers} {which} rows lie more than {limit:.3g} training standard "
        "deviations from the training mean in some feature, beyond what the float32 "
        "linear probe can hold: remove these outliers or rescale the features")


@dataclass(frozen=True)
class StandardRows:
    """The rows ``source[rows]`` (all rows when ``rows`` is None) standardised by
    ``scaling``, as float32 blocks; with ``scaling`` None, ``source`` already holds the
    standardised float32 rows (a copy, or data the caller standardised)."""

    source: np.ndarray
    rows: np.ndarray | None = None
    scaling: Scaling | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.source.shape[0] if self.rows is None else len(self.rows),
                self.source.shape[1])

    @property
    def placement(self) -> str:
        """``"copy"`` when the standardised rows are in memory, ``"stream"`` when every pass
        standardises them again from the source."""
        return "copy" if self.scaling is None and self.rows is None else "stream"

    def blocks(self, size: int, numbers: range | None = None):
        """Yield ``(start, stop, block)``: float32 blocks of ``size`` rows (the last may be
        shorter), ``start:stop`` their place among the rows; only the blocks numbered
        ``numbers`` (a rank's share of :func:`count_blocks`) when given, reading only their
        rows."""
        n = self.shape[0]
        starts = range(0, n, size)
        for start in (starts if numbers is None else (starts[i] for i in numbers)):
            stop = min(n, start + size)
            block = (self.source[start:stop] if self.rows is None
                     else self.source[self.rows[start:stop]])
            yield start, stop, block if self.scaling is None else self.scaling.apply(block)


def count_blocks(n_rows: int, size: int) -> int:
    """How many blocks of ``size`` rows :meth:`StandardRows.blocks` yields for ``n_rows``."""
    return len(range(0, n_rows, size))


def standard_rows(X: np.ndarray, rows: np.ndarray | None, scaling: Scaling) -> StandardRows:
    """``X[rows]`` standardised by ``scaling``, streamed (see :func:`hold` for a copy)."""
    return StandardRows(X, None if rows is None else np.asarray(rows), scaling)


def hold(rows: StandardRows, memory_budget: int) -> StandardRows:
    """``rows`` as one float32 copy when its ``n · D · 4`` bytes fit ``memory_budget``; as they
    are (streamed) otherwise."""
    n, dim = rows.shape
    if rows.placement == "copy" or n * dim * 4 > memory_budget:
        return rows
    return StandardRows(standardised_copy(rows))


def standardised_copy(rows: StandardRows) -> np.ndarray:
    """The standardised rows as one ``(n, D)`` float32 array, filled block by block."""
    if rows.placement == "copy":
        return rows.source
    copy = np.empty(rows.shape, dtype=np.float32)
    for start, stop, block in rows.blocks(block_rows(rows.shape[1], 1)):
        copy[start:stop] = block
    return copy


def check_memory_budget(memory_budget) -> int:
    """``memory_budget`` as an int; :class:`InputError` unless it is a whole number of bytes
    ``>= 0`` (0: never copy)."""
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)) \
            or memory_budget < 0:
        raise InputError(f"memory_budget must be a number of bytes >= 0, got {memory_budget!r}")
    return int(memory_budget)
