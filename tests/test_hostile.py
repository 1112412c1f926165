"""Regression tests for what a hostile-input campaign found: silently wrong numbers, inputs
destroyed by outputs, and tracebacks instead of one line."""

import json

import numpy as np
import pytest

from conftest import gaussian_classes
from probekit import InputError, diagnose, dual_probe

FAST = {"k": (1, 5, 10), "C": (0.1, 10.0), "n_bootstrap": 50}


def same_numbers(a, b) -> None:
    """Two reports agree on every probe score exactly and on every geometry value to 1e-9
    (the spectrum comes from LAPACK, which rescales matrices by factors of its own)."""
    first, second = a.to_dict(), b.to_dict()
    geometry = [data.pop("geometry") for data in (first, second)]
    for data in (first, second):
        data.pop("timings")
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert geometry[0].keys() == geometry[1].keys()
    for key, value in geometry[0].items():
        if isinstance(value, float):
            assert geometry[1][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


# ------------------------------------------------------------------ float32 overflow


@pytest.mark.parametrize("scale", [1e39, 1e-39, 1e100, 1e-100])
def test_cosine_numbers_do_not_depend_on_the_scale_of_the_rows(scale):
    """Rows are normalised in float64 (each first divided by its largest value), so magnitudes
    beyond float32's range give the same report as the same data at scale 1 (float32 held
    inf or 0 for them before, and the kNN probe read chance)."""
    X, y = gaussian_classes(200, 8, 4, separation=1.5, seed=3, dtype=np.float64)
    powers = 2.0 ** np.round(np.log2(scale))  # an exact power of two: X * powers is exact
    same_numbers(dual_probe(X, y, **FAST), dual_probe(X * powers, y, **FAST))


def test_data_too_small_to_square_is_refused():
    X, y = gaussian_classes(60, 4, 2, seed=3, dtype=np.float64)
    with pytest.raises(InputError, match="the largest value is .*e-20.; values below 1e-150"):
        dual_probe(X * 1e-200, y, **FAST)


def test_float32_extremes_work_under_cosine():
    X, y = gaussian_classes(120, 6, 3, separation=2.0, seed=4)
    X = X.astype(np.float32)
    huge = (X / np.abs(X).max() * np.float32(3e38)).astype(np.float32)
    report = dual_probe(huge, y, **FAST)
    assert report.knn["weighted"]["5"]["accuracy"] > 0.5 and np.isfinite(report.geometry["nc1"])


@pytest.mark.parametrize("metric", ["euclidean", "ip"])
@pytest.mark.parametrize("values", ["huge64", "huge32", "uint64", "tiny"])
def test_values_outside_float32_are_refused_under_euclidean_and_ip(metric, values):
    X, y = gaussian_classes(60, 4, 2, separation=2.0, seed=5)
    if values == "huge64":
        X = X.astype(np.float64) * 1e39
    elif values == "huge32":
        X = (X / np.abs(X).max() * 3e38).astype(np.float32)
    elif values == "uint64":
        X = (np.abs(X.astype(np.float64)) * 2.0**60).astype(np.uint64)
    else:
        X = X * 1e-20
    message = "too small" if values == "tiny" else "too large"
    with pytest.raises(InputError, match=f"{message} for the float32 search under metric "
                                         f"'{metric}'"):
        dual_probe(X, y, metric=metric, **FAST)
    with pytest.raises(InputError, match=message):
        diagnose(X, y, metric=metric)


def test_overflowing_euclidean_rows_are_counted():
    X, y = gaussian_classes(60, 4, 2, separation=2.0, seed=5)
    X[[3, 7, 9]] *= 1e30
    with pytest.raises(InputError, match="3 of 60 rows hold values above"):
        dual_probe(X, y, metric="euclidean", **FAST)


# ------------------------------------------------------------------ labels kept as written


def test_text_labels_keep_quotes_and_refuse_control_characters(tmp_path):
    from probekit.data import load_labels

    path = tmp_path / "y.txt"
    path.write_text('"a"\na\nb\n')
    assert load_labels(path).tolist() == ['"a"', "a", "b"]  # three classes, quotes kept
    for text in ("a\x1fz\nb\n", "a\x00\nb\n", "a\nb\x07\n"):
        path.write_bytes(text.encode())
        with pytest.raises(InputError, match="control characters"):
            load_labels(path)
    path.write_text("a\n\nb\n")
    with pytest.raises(InputError, match="1 labels are missing \\(empty lines: 2\\)"):
        load_labels(path)
    path.write_bytes(b"a\r\nb\r\n")  # Windows line ends are line ends
    assert load_labels(path).tolist() == ["a", "b"]
    path.write_bytes("a\x1cb\nc\n".encode())  # str.splitlines would split at \x1c
    with pytest.raises(InputError, match="control characters"):
        load_labels(path)


def test_object_labels_with_a_trailing_nul_are_refused_not_merged():
    from probekit.data import check_labels

    with pytest.raises(InputError, match="control characters"):
        check_labels(np.array(["a\x00", "a", "b"], dtype=object))


def test_parquet_labels_of_invalid_bytes_are_one_line(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    from probekit.data import load_labels

    path = tmp_path / "y.parquet"
    pd.DataFrame({"label": [b"\xff\xfe", b"ok"]}).to_parquet(path)
    with pytest.raises(InputError, match="not UTF-8"):
        load_labels(path)


def test_an_empty_tag_separator_is_one_line(tmp_path):
    from probekit.data import load_tags

    path = tmp_path / "y.txt"
    path.write_text("a;b\nb\n")
    with pytest.raises(InputError, match="separator must be a non-empty string"):
        load_tags(path, separator="")


# ------------------------------------------------------------------ .npy / .npz headers


def _npy_bytes(header: dict, data: bytes = b"", version=(1, 0)) -> bytes:
    import io

    from numpy.lib import format as npy_format

    stream = io.BytesIO()
    writer = {(1, 0): npy_format.write_array_header_1_0,
              (2, 0): npy_format.write_array_header_2_0}[version]
    writer(stream, header)  # the magic string, the version and the header
    return stream.getvalue() + data


def _zip_with(path, name: str, payload: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.npy", payload)


@pytest.mark.parametrize(("shape", "match"), [
    ((-5, 8), "claims shape \\(-5, 8\\), which no array has"),
    ((10**12, 8), "truncated or its header is wrong: the header claims shape"),
    ((1,) * 40, "holds a 40-D array"),
    ((2**62, 2**62), "truncated or its header is wrong"),
])
def test_npy_and_npz_headers_are_checked_before_any_data_is_read(tmp_path, shape, match):
    from probekit.data import load_embeddings

    payload = _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": shape},
                         np.zeros(16).tobytes())
    (tmp_path / "x.npy").write_bytes(payload)
    with pytest.raises(InputError, match=match):
        load_embeddings(tmp_path / "x.npy")
    _zip_with(tmp_path / "x.npz", "embeddings", payload)
    with pytest.raises(InputError, match=match):
        load_embeddings(tmp_path / "x.npz")


def test_an_oversized_header_and_a_non_zip_npz_say_what_is_wrong(tmp_path):
    from probekit.data import load_embeddings

    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }"
    header = header + b" " * (20000 - len(header)) + b"\n"
    blob = b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header + bytes(32)
    (tmp_path / "x.npy").write_bytes(blob)
    with pytest.raises(InputError, match="header is larger than the 10000 bytes"):
        load_embeddings(tmp_path / "x.npy")
    (tmp_path / "y.npz").write_text("not a zip at all")
    with pytest.raises(InputError, match="is not an .npz archive \\(not a zip file\\)"):
        load_embeddings(tmp_path / "y.npz")
