"""Loading: the door every input file walks through (validation is :mod:`probekit.validate`).

Only this module reads user files. Arrays are never unpickled: ``.npy``/``.npz`` are read with
``allow_pickle=False`` (``.npy`` memory-mapped, so inputs larger than RAM work), text and
tables through pandas. Every check raises :class:`~probekit.errors.InputError` with one line that
names the problem.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit.errors import InputError, install_hint
from probekit.validate import check_embeddings, check_labels, check_printable

EMBEDDING_SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".parquet")
LABEL_SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".txt", ".parquet")
_EMBEDDING_KEYS = ("embeddings", "embedding", "features", "X", "x")
_LABEL_KEYS = ("labels", "label", "y", "targets", "target")
_INT_PATTERN = re.compile(r"^[+-]?\d+$")


# --------------------------------------------------------------------------------------------
# files


def load_embeddings(path: str | Path, *, key: str | None = None) -> np.ndarray:
    """Read an N x D embedding matrix from ``.npy`` (memory-mapped), ``.npz``, ``.csv``/``.tsv``
    or ``.parquet`` and validate it with :func:`check_embeddings`.

    Parameters
    ----------
    path : path to the file.
    key : name of the array inside an ``.npz`` holding several (else the only array, or the one
        called ``embeddings``/``features``/``X``).
    """
    path = _existing_file(path, EMBEDDING_SUFFIXES, "embeddings")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
    elif suffix == ".npz":
        array = _load_npz(path, key, _EMBEDDING_KEYS, "embeddings")
    else:
        frame = _read_table(path, header_detect=True)
        array = _frame_to_matrix(frame, path)
    return check_embeddings(array, name=path.name)


def _is_pattern(path: str | Path) -> bool:
    """A glob pattern: it holds ``*``, ``?`` or ``[`` and is not itself an existing file (so a
    file named ``[weird].npy`` or ``run?.npy`` is read as the file it is)."""
    return any(char in str(path) for char in "*?[") and not Path(path).is_file()


def layer_files(path: str | Path) -> list[Path]:
    """The files a layer-stack pattern matches, in natural order (none for a plain path)."""
    if not _is_pattern(path):
        return []
    import glob

    return [Path(name) for name in sorted(glob.glob(str(path)), key=_natural_key)]


def is_layer_stack(path: str | Path, *, key: str | None = None) -> bool:
    """Whether ``path`` names a layer stack: a glob pattern (``layer_*.npy``) or a 3-D
    ``.npy``/``.npz`` array (L x N x D)."""
    if _is_pattern(path):
        return True
    path = Path(path)
    if path.suffix.lower() == ".npy" and path.is_file() and path.stat().st_size:
        return _npy_header(path).ndim == 3
    if path.suffix.lower() == ".npz" and path.is_file() and path.stat().st_size:
        return _npz_header(path, key, _EMBEDDING_KEYS, "embeddings").ndim == 3
    return False


def load_layers(path: str | Path, *, key: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The layers of a stack and their names: a 3-D ``.npy`` (L x N x D, memory-mapped, so each
    layer is a view read when used) or ``.npz``, named ``layer 0`` ...; or a glob pattern of
    N x D files, one per layer, in natural order (``layer_2`` before ``layer_10``), named by
    their file stems. Each layer is validated by whoever probes it."""
    if _is_pattern(path):
        paths = layer_files(path)
        if not paths:
            raise InputError(f"no embedding files match {path}")
        return [load_embeddings(name, key=key) for name in paths], [p.stem for p in paths]
    path = _existing_file(path, (".npy", ".npz"), "layer-stack")
    array = (_load_npy(path) if path.suffix.lower() == ".npy"
             else _load_npz(path, key, _EMBEDDING_KEYS, "embeddings"))
    if array.ndim != 3 or 0 in array.shape:
        raise InputError(f"{path.name}: a layer stack is L x N x D, got shape {array.shape}")
    return [array[index] for index in range(array.shape[0])], [
        f"layer {index}" for index in range(array.shape[0])]


def count_rows(path: str | Path, *, key: str | None = None) -> int | None:
    """The number of rows an ``.npy``/``.npz`` embedding file holds, read from its header alone
    (nothing is decompressed or mapped); None for other formats. Lets a caller compare it with
    the labels before loading a large file."""
    path = Path(path)
    if not path.is_file() or not path.stat().st_size:
        return None
    suffix = path.suffix.lower()
    if suffix == ".npy":
        header = _npy_header(path)
    elif suffix == ".npz":
        header = _npz_header(path, key, _EMBEDDING_KEYS, "embeddings")
    else:
        return None
    return header.shape[0] if header.ndim == 2 else None


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def load_labels(
    path: str | Path, *, key: str | None = None, column: str | None = None
) -> np.ndarray:
    """Read one label per sample: ``.npy``/``.npz`` (ints or strings, never objects), ``.txt``
    (one label per line), ``.csv``/``.tsv``/``.parquet`` (a header row; the only column, the one
    named ``column``, or one called ``label``/``labels``/``y``).

    Text labels that are all plain integers (``"12"``, not ``"012"``) become ``int64``; anything
    else stays a string.
    """
    path = _existing_file(path, LABEL_SUFFIXES, "labels")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        labels = np.asarray(_load_npy(path))
    elif suffix == ".npz":
        labels = _load_npz(path, key, _LABEL_KEYS, "labels")
    elif suffix == ".txt":
        labels = _line_labels(path)
    else:
        frame = _read_table(path, header_detect=False, header=0)
        labels = _text_labels(frame[_pick_column(frame, column, path)])
    return check_labels(labels, name=path.name)


def is_tag_file(path: str | Path, *, key: str | None = None) -> bool:
    """Whether a labels file holds an N x C matrix (C > 1) of multi-label tags (``.npy`` or
    ``.npz``); text files say so with ``--multilabel``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz") or not path.is_file() or not path.stat().st_size:
        return False
    header = (_npy_header(path) if suffix == ".npy"
              else _npz_header(path, key, _LABEL_KEYS, "labels"))
    return header.ndim == 2 and header.shape[1] > 1


def load_tags(path: str | Path, *, key: str | None = None, column: str | None = None,
              separator: str = ";", tags: list[str] | None = None
              ) -> tuple[np.ndarray, list[str], list[str]]:
    """Multi-label tags: an N x C 0/1 matrix (``.npy``/``.npz``; columns named ``0..C-1``), or
    one cell of tags per sample separated by ``separator`` (``.txt``, ``.csv``, ``.tsv``,
    ``.parquet``; an empty cell is a sample without tags).

    ``tags`` fixes the vocabulary (pass the training set's for a test set): tags outside it
    are dropped and named in the returned notes. Returns ``(Y (N, C) bool, tag names,
    notes)``.
    """
    if not isinstance(separator, str) or not separator:
        raise InputError("the tag separator must be a non-empty string")
    path = _existing_file(path, LABEL_SUFFIXES, "labels")
    suffix = path.suffix.lower()
    notes: list[str] = []
    if suffix in (".npy", ".npz"):
        array = np.asarray(_load_npy(path) if suffix == ".npy"
                           else _load_npz(path, key, _LABEL_KEYS, "labels"))
        if array.ndim == 2 and np.issubdtype(array.dtype, np.number) or array.dtype == bool:
            if array.ndim != 2:
                raise InputError(f"{path.name}: multi-label tags must be N x C, got shape "
                                 f"{array.shape}")
            if array.dtype != bool and not np.isin(array, (0, 1)).all():
                raise InputError(f"{path.name}: a tag matrix holds only 0 and 1")
            names = [str(i) for i in range(array.shape[1])]
            if tags is not None and len(tags) != array.shape[1]:
                raise InputError(f"{path.name} has {array.shape[1]} tag columns, the training "
                                 f"labels {len(tags)}")
            return array.astype(bool), list(tags) if tags is not None else names, notes
        if array.ndim != 1:
            raise InputError(f"{path.name}: tags are an N x C 0/1 matrix or one text cell per "
                             f"sample, got a {array.dtype} array of shape {array.shape}")
        cells = [str(cell) for cell in array]
    elif suffix == ".txt":  # one line per sample; an empty line is a sample without tags
        cells = _read_lines(path)
    else:
        frame = _read_table(path, header_detect=False, header=0)
        cells = frame[_pick_column(frame, column, path)].fillna("").astype(str).tolist()
    rows = [sorted({part.strip() for part in str(cell).split(separator) if part.strip()})
            for cell in cells]
    if not rows:
        raise InputError(f"{path.name} holds no labels")
    vocabulary = tags if tags is not None else sorted({tag for row in rows for tag in row})
    if not vocabulary:
        raise InputError(f"{path.name} holds no tags")
    position = {tag: index for index, tag in enumerate(vocabulary)}
    unknown = sorted({tag for row in rows for tag in row if tag not in position})
    if unknown:
        notes.append(f"{len(unknown)} tag(s) of {path.name} never occur in training and are "
                     f"left out: {', '.join(unknown[:10])}" + (" ..." if len(unknown) > 10
                                                               else ""))
    matrix = np.zeros((len(rows), len(vocabulary)), dtype=bool)
    for index, row in enumerate(rows):
        matrix[index, [position[tag] for tag in row if tag in position]] = True
    return matrix, list(vocabulary), notes


def _existing_file(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} path is not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{what} file is empty: {path}")
    if path.suffix.lower() not in suffixes:
        raise InputError(
            f"cannot read {what} from '{path.name}': expected one of {', '.join(suffixes)}"
        )
    return path


_MAX_HEADER = 10_000  # bytes of .npy header numpy parses safely (its own default)
_MAX_NDIM = 3  # embeddings are 2-D, a layer stack 3-D, labels 1-D or 2-D


@dataclass(frozen=True)
class _Header:
    """What a .npy header says, checked against the bytes that follow it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _read_header(stream, size: int, name: str) -> _Header:
    """Read and check the header of a .npy stream whose total length is ``size`` bytes: the
    magic string, a parsable header of at most :data:`_MAX_HEADER` bytes, no Python objects, a
    valid shape of at most :data:`_MAX_NDIM` dimensions, and as many data bytes as the shape
    needs. Every failure is one :class:`InputError` line that says what is wrong."""
    from numpy.lib import format as npy_format

    magic = stream.read(8)
    if magic[:6] != b"\x93NUMPY" or len(magic) < 8:
        if magic[:1] == b"\x80" and magic[1:2] and 2 <= magic[1] <= 5:
            raise InputError(f"{name} holds pickled Python data, not a .npy array; probekit never "
                             "unpickles files. Save the array with np.save(..., "
                             "allow_pickle=False)")
        raise InputError(f"{name} is not a .npy array (it does not start with NumPy's magic "
                         "string)")
    version = (magic[6], magic[7])
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    if version not in readers:
        raise InputError(f"{name}: .npy format version {version[0]}.{version[1]} is not "
                         "supported (save it with np.save)")
    try:
        shape, fortran_order, dtype = readers[version](stream, max_header_size=_MAX_HEADER)
    except (ValueError, EOFError, SyntaxError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "large" in text or "max_header_size" in text:
            raise InputError(f"{name}: its .npy header is larger than the {_MAX_HEADER} bytes "
                             "that can be read safely") from None
        raise InputError(f"{name}: its .npy header cannot be read ({text})") from None
    if dtype.hasobject:
        raise InputError(
            f"{name} holds pickled Python objects; probekit never unpickles files. Save a "
            "numeric or string array with np.save(..., allow_pickle=False)")
    if len(shape) > _MAX_NDIM:
        raise InputError(f"{name} holds a {len(shape)}-D array; embeddings are 2-D (3-D for a "
                         "stack of layers) and labels 1-D or 2-D")
    if not all(isinstance(extent, int) and extent >= 0 for extent in shape):
        raise InputError(f"{name}: its header claims shape {shape}, which no array has")
    needed = dtype.itemsize
    for extent in shape:
        needed *= extent  # Python integers: no overflow
    available = size - stream.tell()
    if needed > available:
        raise InputError(
            f"{name} is truncated or its header is wrong: the header claims shape {shape} of "
            f"{dtype} ({needed:,} bytes) but {max(available, 0):,} bytes follow it")
    return _Header(tuple(shape), dtype, bool(fortran_order))


def _npy_header(path: Path) -> _Header:
    try:
        with open(path, "rb") as stream:
            return _read_header(stream, path.stat().st_size, path.name)
    except OSError as error:
        raise InputError(f"cannot read {path.name}: {error.strerror or error}") from None


def _load_npy(path: Path) -> np.ndarray:
    """A checked .npy file, memory-mapped (never unpickled)."""
    header = _npy_header(path)
    if 0 in header.shape:
        return np.zeros(header.shape, dtype=header.dtype)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, OverflowError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"cannot read {path.name} as .npy: {text}") from None


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{path.name} is not an .npz archive (not a zip file)") from None
    except OSError as error:
        raise InputError(f"cannot read {path.name}: {error.strerror or error}") from None


def _npz_member(archive: zipfile.ZipFile, path: Path, key: str | None,
                preferred: tuple[str, ...], what: str) -> str:
    """The name of the array to read: ``key``, the only one, or the first preferred name."""
    names = [name[:-4] for name in archive.namelist() if name.endswith(".npy")]
    if not names:
        raise InputError(f"{path.name} holds no arrays")
    if key is not None:
        if key not in names:
            raise InputError(f"{path.name} has no array '{key}' (it has: {', '.join(names)})")
        return key
    if len(names) == 1:
        return names[0]
    matches = [name for name in preferred if name in names]
    if not matches:
        raise InputError(f"{path.name} holds several arrays ({', '.join(names)}); say which "
                         f"{what} to use with --key")
    return matches[0]


def _read_member(archive: zipfile.ZipFile, path: Path, name: str, *,
                 header_only: bool = False) -> _Header | np.ndarray:
    """One array of an .npz, its header checked against the member's size before a single data
    byte is decompressed (a header claiming 10^12 rows fails here, not in an allocation)."""
    info = archive.getinfo(f"{name}.npy")
    label = f"{path.name} (array '{name}')"
    try:
        with archive.open(info) as stream:
            header = _read_header(stream, info.file_size, label)
            if header_only:
                return header
            count = 1
            for extent in header.shape:
                count *= extent
            data = stream.read(count * header.dtype.itemsize)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise InputError(f"cannot read {label}: {error}") from None
    if len(data) < count * header.dtype.itemsize:
        raise InputError(f"{label} is truncated")
    array = np.frombuffer(data, dtype=header.dtype, count=count)
    return array.reshape(header.shape, order="F" if header.fortran_order else "C")


def _load_npz(path: Path, key: str | None, preferred: tuple[str, ...], what: str) -> np.ndarray:
    with _open_zip(path) as archive:
        return _read_member(archive, path, _npz_member(archive, path, key, preferred, what))


def _npz_header(path: Path, key: str | None, preferred: tuple[str, ...], what: str) -> _Header:
    with _open_zip(path) as archive:
        return _read_member(archive, path, _npz_member(archive, path, key, preferred, what),
                            header_only=True)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz (a report's figure data), each header checked before its data
    is read, never unpickled."""
    path = _existing_file(path, (".npz",), "array")
    with _open_zip(path) as archive:
        names = [name[:-4] for name in archive.namelist() if name.endswith(".npy")]
        return {name: _read_member(archive, path, name) for name in names}


def _read_table(path: Path, *, header_detect: bool, header: int | None = None):
    import pandas as pd

    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        if path.suffix.lower() == ".parquet":
            try:
                return pd.read_parquet(path)
            except ImportError:
                raise InputError(
                    f"reading .parquet needs pyarrow: {install_hint('parquet')}"
                ) from None
        if path.suffix.lower() == ".txt":
            return pd.read_csv(path, header=None, dtype=str, keep_default_na=False,
                               sep="\x1f", engine="python", skip_blank_lines=True)
        if header_detect:
            first = pd.read_csv(path, header=None, sep=separator, nrows=1, dtype=str,
                                keep_default_na=False).iloc[0].tolist()
            header = 0 if _looks_like_header(first) else None
            frame = pd.read_csv(path, header=header, sep=separator)
            if header == 0 and str(frame.columns[0]).startswith("Unnamed: 0"):
                frame = frame.iloc[:, 1:]  # the index column DataFrame.to_csv() writes
            return frame
        return pd.read_csv(path, header=header, sep=separator,
                           dtype=str if header is not None else None)
    except InputError:
        raise
    except Exception as error:  # pandas raises many types for malformed files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"cannot read {path.name}: {message}") from None


def _looks_like_header(cells: list[str]) -> bool:
    """A first row is a header when a cell is not a number, or when it reads 0, 1, ..., D-1
    (the column names pandas writes by default)."""
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        return True
    return len(values) > 1 and values == list(range(len(values)))


def _frame_to_matrix(frame, path: Path) -> np.ndarray:
    import pandas as pd

    if frame.shape[1] == 1 and frame.dtypes.iloc[0].kind == "O":
        first = frame.iloc[0, 0]
        if isinstance(first, (list, tuple, np.ndarray)):  # parquet list column
            try:
                return np.stack([np.asarray(row, dtype=np.float64) for row in frame.iloc[:, 0]])
            except ValueError:
                raise InputError(f"{path.name}: embedding rows have different lengths") from None
    bad = [str(name) for name, dtype in frame.dtypes.items()
           if not pd.api.types.is_numeric_dtype(dtype)]
    if bad:
        raise InputError(
            f"{path.name}: embedding columns must be numeric; not numeric: {', '.join(bad[:5])}"
        )
    return frame.to_numpy()


def _pick_column(frame, column: str | None, path: Path) -> str:
    names = [str(name) for name in frame.columns]
    if column is not None:
        if column not in names:
            raise InputError(f"{path.name} has no column '{column}' (it has: {', '.join(names)})")
        return column
    if len(names) == 1:
        return names[0]
    for name in _LABEL_KEYS:
        if name in names:
            return name
    raise InputError(
        f"{path.name} has several columns ({', '.join(names)}); "
        "say which holds the labels with --label-column"
    )


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file exactly as written: split on newlines only (``\\r\\n``
    and ``\\n``; not on the other characters ``str.splitlines`` treats as line breaks),
    nothing unquoted, no final empty line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"cannot read {path.name} as UTF-8 text: {error.reason} at byte "
                         f"{error.start}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _line_labels(path: Path) -> np.ndarray:
    """One label per line of a ``.txt`` file, kept as written (surrounding spaces aside)."""
    import pandas as pd

    lines = _read_lines(path)
    empty = [number for number, line in enumerate(lines, 1) if not line.strip()]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise InputError(f"{path.name}: {len(empty)} labels are missing (empty lines: {shown})")
    return _text_labels(pd.Series(lines, dtype=object))


def _text_labels(series) -> np.ndarray:
    if series.map(lambda cell: isinstance(cell, bytes)).any():
        try:
            series = series.map(lambda cell: cell.decode("utf-8") if isinstance(cell, bytes)
                                else cell)
        except UnicodeDecodeError as error:
            raise InputError(f"labels are bytes that are not UTF-8 text ({error.reason})") \
                from None
    missing = int(series.isna().sum()) + int((series.astype(str).str.strip() == "").sum())
    if missing:
        raise InputError(f"{missing} labels are missing (empty cells)")
    stripped = series.astype(str).str.strip().to_numpy(dtype=object)
    check_printable(stripped, "labels")  # before NumPy's str type drops trailing NULs
    values = np.asarray(stripped, dtype=str)
    if values.size and all(_INT_PATTERN.match(value) and str(int(value)) == value
                           for value in values):
        return values.astype(np.int64)  # "007" or "+4" stay strings: names are kept as written
    return values
