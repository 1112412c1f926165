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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probekit.arrays import float32_limit, row_blocks
from probekit.errors import InputError

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


def fit_scaling(X: np.ndarray, rows: np.ndarray | None = None, *,
                which: str = "training") -> Scaling:
    """The mean and standard deviation of ``X[rows]`` (all rows when None), in two passes
    accumulated in float64 over blocks of :data:`BLOCK_ELEMENTS` values (no float64 copy of the
    data is made); :class:`InputError` when a row lies beyond what float32 can hold after
    standardisation (see the module docstring)."""
    n = X.shape[0] if rows is None else len(rows)
    total = np.zeros(X.shape[1])
    low = np.full(X.shape[1], np.inf)
    high = np.full(X.shape[1], -np.inf)
    for _, _, block in row_blocks(X, rows, BLOCK_ELEMENTS):
        total += block.sum(axis=0, dtype=np.float64)
        if len(block):
            low = np.minimum(low, block.min(axis=0))
            high = np.maximum(high, block.max(axis=0))
    mean = total / n
    squares = np.zeros(X.shape[1])
    for _, _, block in row_blocks(X, rows, BLOCK_ELEMENTS):
        centred = block - mean  # one float64 temporary per block, squared in place
        centred *= centred
        squares += centred.sum(axis=0)
    scale = np.sqrt(squares / n)
    scale[scale == 0] = 1.0
    scaling = Scaling(mean, scale)
    _check_extremes(X, rows, scaling, low, high, which)
    return scaling


def check_rows(X: np.ndarray, rows: np.ndarray | None, scaling: Scaling, *,
               which: str = "test") -> None:
    """:class:`InputError` when a row of ``X[rows]`` lies beyond what float32 can hold after
    standardisation by ``scaling`` (one pass over the rows)."""
    low = np.full(X.shape[1], np.inf)
    high = np.full(X.shape[1], -np.inf)
    for _, _, block in row_blocks(X, rows, BLOCK_ELEMENTS):
        if len(block):
            low = np.minimum(low, block.min(axis=0))
            high = np.maximum(high, block.max(axis=0))
    _check_extremes(X, rows, scaling, low, high, which)


def _check_extremes(X, rows, scaling: Scaling, low, high, which: str) -> None:
    """Standardisation is monotone in each feature (and so is its rounding), so some row is
    too far exactly when a column's minimum or maximum is: only then are the rows counted."""
    limit = float32_limit(X.shape[1])
    if not np.isfinite(low).any():  # no rows
        return
    far = max(np.max(np.abs((high - scaling.mean) / scaling.scale)),
              np.max(np.abs((low - scaling.mean) / scaling.scale)))
    if far <= limit:
        return
    outliers = 0
    for _, _, block in row_blocks(X, rows, BLOCK_ELEMENTS):
        outliers += int(np.count_nonzero(
            (np.abs((block - scaling.mean) / scaling.scale) > limit).any(axis=1)))
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

    def blocks(self, size: int):
        """Yield ``(start, stop, block)``: float32 blocks of ``size`` rows (the last may be
        shorter), ``start:stop`` their place among the rows."""
        n = self.shape[0]
        for start in range(0, n, size):
            stop = min(n, start + size)
            block = (self.source[start:stop] if self.rows is None
                     else self.source[self.rows[start:stop]])
            yield start, stop, block if self.scaling is None else self.scaling.apply(block)


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
