"""Array helpers every compute module shares: row chunks, float32 copies, unit rows.

Nothing here reads files or validates user input (that is :mod:`probekit.data`); these are
the streaming primitives that keep memory bounded on memory-mapped inputs.
"""

from __future__ import annotations

import numpy as np

CHUNK_ELEMENTS = 1 << 24  # 64 MiB of float32 per chunk when streaming over rows


def row_chunks(n_rows: int, n_cols: int, max_elements: int | None = None):
    """Yield ``(start, stop)`` row ranges whose blocks hold at most ``max_elements`` values
    (default :data:`CHUNK_ELEMENTS`, read at each call so tests can shrink it)."""
    step = max(1, (max_elements or CHUNK_ELEMENTS) // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def row_blocks(X: np.ndarray, rows: np.ndarray | None = None,
               max_elements: int | None = None):
    """Yield ``(start, stop, block)``: consecutive blocks of ``X`` (or of ``X[rows]``) with at
    most ``max_elements`` values, ``start:stop`` their place in the output."""
    n = X.shape[0] if rows is None else len(rows)
    for start, stop in row_chunks(n, X.shape[1], max_elements):
        yield start, stop, X[start:stop] if rows is None else X[rows[start:stop]]


def to_float32(X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """A C-contiguous float32 copy of ``X`` (or of ``X[rows]``), built chunk by chunk so a
    memory-mapped float64 input never needs a float64 copy in RAM."""
    out = np.empty((X.shape[0] if rows is None else len(rows), X.shape[1]), dtype=np.float32)
    for start, stop, block in row_blocks(X, rows):
        out[start:stop] = block
    return out


def normalised(block: np.ndarray) -> np.ndarray:
    """The rows of ``block`` divided by their L2 norms, in float64 (all-zero rows stay zero).

    Each row is first divided by its largest magnitude, so that neither huge (1e300) nor tiny
    (1e-300) values over- or underflow when squared: ``x/‖x‖ = (x/m)/‖x/m‖``, ``m = max|xᵢ|``.
    """
    out = np.array(block, dtype=np.float64)
    largest = np.abs(out).max(axis=1, keepdims=True) if out.shape[1] else np.zeros((len(out), 1))
    np.divide(out, largest, out=out, where=largest > 0)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def unit_rows(X: np.ndarray, rows: np.ndarray | None = None, *,
              dtype=np.float32) -> np.ndarray:
    """L2-normalised copy of the rows of ``X`` (or ``X[rows]``) in ``dtype``, computed block by
    block in float64 (see :func:`normalised`); all-zero rows stay zero."""
    out = np.empty((X.shape[0] if rows is None else len(rows), X.shape[1]), dtype=dtype)
    for start, stop, block in row_blocks(X, rows):
        out[start:stop] = normalised(block)
    return out


PREPARE_ELEMENTS = 1 << 22  # values normalised at once (32 MiB of float64 temporaries)


def normalised_rows_of(X: np.ndarray, positions, dtype=np.float32) -> np.ndarray:
    """``normalised(X[positions])`` in ``dtype`` (``positions`` a slice or row indices),
    normalised :data:`PREPARE_ELEMENTS` values at a time, so that a large block read from a
    memory map never needs float64 temporaries of its whole size."""
    viewed = isinstance(positions, slice)
    # a slice is a view of the array or memory map (nothing read yet); indices are read by part
    rows = X[positions] if viewed else np.asarray(positions)
    out = np.empty((len(rows), X.shape[1]), dtype=dtype)
    for start, stop in row_chunks(len(rows), X.shape[1], PREPARE_ELEMENTS):
        out[start:stop] = normalised(rows[start:stop] if viewed else X[rows[start:stop]])
    return out


class UnitRows:
    """``X[rows]`` L2-normalised as :func:`unit_rows` holds them, without the copy: reading
    ``[start:stop]`` or ``[indices]`` normalises those rows (in float64, then ``dtype``), so
    code that reads unit rows by blocks or samples can take a large input without holding
    its unit rows."""

    def __init__(self, X: np.ndarray, rows: np.ndarray | None = None, *, dtype=np.float32):
        self.source, self.rows = X, None if rows is None else np.asarray(rows)
        self.shape = (X.shape[0] if rows is None else len(self.rows), X.shape[1])
        self.dtype = np.dtype(dtype)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        positions = key if self.rows is None else self.rows[key]
        return normalised_rows_of(self.source, positions, self.dtype)


def float32_limit(dim: int) -> float:
    """The largest magnitude whose squared distances and inner products stay finite in float32
    over ``dim`` dimensions, with a factor 8 to spare: ``sqrt(float32 max / (8·dim))``
    (centred rows differ by at most twice it, so ``‖q − x‖² ≤ 4·dim·limit² = float32 max / 2``).
    About 2e17 at dim = 768."""
    return float(np.sqrt(np.finfo(np.float32).max / (8.0 * max(1, dim))))


class RowsView:
    """``X[rows]`` without the copy: reading ``[start:stop]`` or ``[indices]`` gives those rows
    of ``X[rows]`` (read from ``X``, a memory map or an array), so streaming code that reads
    its input by blocks of rows can take a subset of a large input as it takes the input."""

    def __init__(self, X: np.ndarray, rows: np.ndarray):
        self.source, self.rows = X, np.asarray(rows)
        self.shape = (len(self.rows), X.shape[1])
        self.dtype = X.dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # X[rows, columns]
            return self[key[0]][(slice(None), *key[1:])]
        return np.asarray(self.source[self.rows[key]])
