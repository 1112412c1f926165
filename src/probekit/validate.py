"""Validation at the door: every array a probe receives is checked here once, with one-line
:class:`~probekit.errors.InputError` messages that say what is wrong and how many rows."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from probekit.arrays import row_chunks
from probekit.errors import InputError


def check_embeddings(X, *, name: str = "embeddings") -> np.ndarray:
    """Validate an embedding matrix and return it as a 2-D numeric array (no copy for numeric
    arrays and memory maps).

    Raises :class:`InputError` for non-numeric or object arrays, anything but 2 dimensions, an
    empty matrix, and NaN or infinite values (naming how many rows hold them).
    """
    if isinstance(X, np.ndarray):
        array = X
    else:
        try:
            array = np.asarray(X)
        except (ValueError, TypeError) as error:
            raise InputError(f"{name}: cannot make an array of it ({error})") from None
    if array.dtype.kind not in "iuf":  # not bool, complex, timedelta, datetime, text, objects
        raise InputError(f"{name}: embeddings must be real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise InputError(
            f"{name}: embeddings must be a 2-D matrix (samples x dimensions), "
            f"got {array.ndim}-D shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name}: embedding matrix is empty, shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        scan = scan_rows(array)
        if scan.nonfinite:
            raise InputError(
                f"{name}: {scan.nonfinite} of {array.shape[0]} rows hold NaN or infinite values"
            )
        if scan.huge:
            raise InputError(
                f"{name}: {scan.huge} of {array.shape[0]} rows hold values above {HUGE:g} in "
                "magnitude, which overflow once squared; rescale the embeddings"
            )
        if 0 < scan.largest < TINY:
            raise InputError(
                f"{name}: the largest value is {scan.largest:.3g}; values below {TINY:g} "
                "underflow once squared, so variances and distances would read 0; rescale "
                "the embeddings"
            )
    return array


HUGE = 1e150  # |x| beyond this overflows float64 once squared and summed
TINY = 1e-150  # data whose largest |x| is below this underflows float64 once squared


@dataclass(frozen=True)
class RowScan:
    """What one pass over an embedding matrix found: rows holding NaN or infinity, rows
    holding a finite value above :data:`HUGE`, and the largest finite magnitude."""

    nonfinite: int
    huge: int
    largest: float


def scan_rows(X: np.ndarray) -> RowScan:
    """One streamed pass over ``X`` (see :class:`RowScan`)."""
    can_be_huge = float(np.finfo(X.dtype).max) > HUGE  # float64 and wider only
    nonfinite = huge = 0
    largest = 0.0
    for start, stop in row_chunks(X.shape[0], X.shape[1]):
        block = np.asarray(X[start:stop])
        finite = np.isfinite(block)
        nonfinite += int(np.count_nonzero(~finite.all(axis=1)))
        magnitude = np.where(finite, np.abs(block), 0)
        if can_be_huge:
            huge += int(np.count_nonzero((magnitude > HUGE).any(axis=1)))
        largest = max(largest, float(magnitude.max(initial=0)))
    return RowScan(nonfinite, huge, largest)


def check_labels(y, *, name: str = "labels") -> np.ndarray:
    """Validate a label vector: 1-D (an N x 1 column is flattened), integers or strings, no NaN.

    Object arrays from Python lists or pandas are accepted when every element is a string or
    every element is an integer.
    """
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InputError(
            f"{name}: labels must be 1-D (one label per sample), got shape {array.shape}"
        )
    if array.size == 0:
        raise InputError(f"{name}: label vector is empty")
    if array.dtype.kind == "S":
        try:
            array = np.char.decode(array, "utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name}: byte-string labels are not valid UTF-8") from None
    if array.dtype == object:
        if all(isinstance(value, str) for value in array):
            check_printable(array, name)  # before NumPy's str type drops trailing NULs
            array = array.astype(str)
        elif all(isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                 for value in array):
            array = array.astype(np.int64)
        else:
            raise InputError(f"{name}: labels must all be strings or all be integers")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(
                f"{name}: {int(np.count_nonzero(~np.isfinite(array)))} labels are NaN or infinite"
            )
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype.kind in "Ub"):
        raise InputError(f"{name}: labels must be integers or strings, got dtype {array.dtype}")
    if array.dtype.kind == "U":
        check_printable(array, name)
    return array


def check_lengths(X: np.ndarray, y: np.ndarray, *, which: str = "") -> None:
    """Raise :class:`InputError` unless ``X`` and ``y`` have as many rows; ``which`` ("train",
    "test" or "") names the set in the message."""
    prefix = f"{which} " if which else ""
    if X.shape[0] != y.shape[0]:
        raise InputError(f"{prefix}embeddings have {X.shape[0]} rows but {prefix}labels have "
                         f"{y.shape[0]}")


def check_dataset(X, y, *, which: str = "") -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_embeddings`, :func:`check_labels` and :func:`check_lengths` in one call."""
    prefix = f"{which} " if which else ""
    X = check_embeddings(X, name=f"{prefix}embeddings")
    y = check_labels(y, name=f"{prefix}labels")
    check_lengths(X, y, which=which)
    return X, y


def check_same_dimensions(train: np.ndarray, test: np.ndarray) -> None:
    """Raise :class:`InputError` unless train and test embeddings have the same width."""
    if train.shape[1] != test.shape[1]:
        raise InputError(f"train embeddings have {train.shape[1]} dimensions but test "
                         f"embeddings have {test.shape[1]}")


def check_printable(labels: np.ndarray, name: str) -> None:
    """Refuse labels holding control characters (NUL, unit separators...): they cannot be kept
    as written (NumPy drops trailing NULs) and are never meant as class names."""
    bad = [value for value in set(labels.tolist())
           if any(unicodedata.category(char) == "Cc" for char in value)]
    if bad:
        raise InputError(f"{name}: {len(bad)} label(s) hold control characters, e.g. "
                         f"{bad[0]!r}; labels must be printable text")


def check_tags(Y, *, name: str = "labels") -> np.ndarray:
    """An (N, C) 0/1 tag matrix as bool; one-line errors otherwise."""
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[1] < 1:
        raise InputError(f"multi-label {name} must be an N x C 0/1 matrix, got shape {Y.shape}")
    if Y.dtype != bool:
        if not np.issubdtype(Y.dtype, np.number):
            raise InputError(f"multi-label {name} must be numeric 0/1, got dtype {Y.dtype}")
        if not np.isin(Y, (0, 1)).all():
            raise InputError(f"multi-label {name} must hold only 0 and 1")
    return Y.astype(bool)
