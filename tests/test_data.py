"""Tests of probekit.data: file loading, validation, label encoding and chunked helpers."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from probekit import arrays
from probekit.arrays import normalised, row_chunks, to_float32, unit_rows
from probekit.data import load_embeddings, load_labels
from probekit.errors import InputError
from probekit.labels import encode_labels
from probekit.validate import check_embeddings, check_labels, scan_rows


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(12, 5))


def _raises_one_line(match: str, function, *args, **kwargs) -> str:
    """Call ``function`` and check it raises a one-line InputError matching ``match``."""
    with pytest.raises(InputError, match=match) as excinfo:
        function(*args, **kwargs)
    message = str(excinfo.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message, f"message spans several lines: {message!r}"
    return message


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)
    with pytest.raises(ValueError):
        check_embeddings(np.zeros(3))


# --------------------------------------------------------------------------------------------
# load_embeddings


def test_npy_is_memory_mapped(tmp_path, X):
    path = tmp_path / "emb.npy"
    np.save(path, X)
    result = load_embeddings(path)
    assert isinstance(result, np.memmap)
    assert result.shape == X.shape
    np.testing.assert_array_equal(np.asarray(result), X)


def test_npy_float32_and_int_keep_their_dtype(tmp_path, X):
    np.save(tmp_path / "f32.npy", X.astype(np.float32))
    np.save(tmp_path / "int.npy", np.arange(12).reshape(4, 3))
    assert load_embeddings(tmp_path / "f32.npy").dtype == np.float32
    ints = load_embeddings(tmp_path / "int.npy")
    assert np.issubdtype(ints.dtype, np.integer)
    np.testing.assert_array_equal(ints, np.arange(12).reshape(4, 3))


def test_npy_path_as_string(tmp_path, X):
    path = tmp_path / "emb.npy"
    np.save(path, X)
    np.testing.assert_array_equal(load_embeddings(str(path)), X)


def test_npz_single_array(tmp_path, X):
    path = tmp_path / "emb.npz"
    np.savez(path, whatever=X)
    np.testing.assert_array_equal(load_embeddings(path), X)


def test_npz_several_arrays_with_key(tmp_path, X):
    path = tmp_path / "emb.npz"
    np.savez(path, first=X, second=2 * X)
    np.testing.assert_array_equal(load_embeddings(path, key="second"), 2 * X)
    np.testing.assert_array_equal(load_embeddings(path, key="first"), X)


def test_npz_several_arrays_preferred_name(tmp_path, X):
    path = tmp_path / "emb.npz"
    np.savez(path, labels=np.arange(12), embeddings=X, other=3 * X)
    np.testing.assert_array_equal(load_embeddings(path), X)


def test_npz_several_arrays_without_key(tmp_path, X):
    path = tmp_path / "emb.npz"
    np.savez(path, first=X, second=2 * X)
    message = _raises_one_line("--key", load_embeddings, path)
    assert "first" in message and "second" in message


def test_npz_unknown_key(tmp_path, X):
    path = tmp_path / "emb.npz"
    np.savez(path, first=X)
    message = _raises_one_line("nope", load_embeddings, path, key="nope")
    assert "first" in message


def test_csv_without_header(tmp_path, X):
    path = tmp_path / "emb.csv"
    np.savetxt(path, X, delimiter=",")
    result = load_embeddings(path)
    assert result.shape == X.shape
    np.testing.assert_allclose(result, X)


def test_csv_with_header(tmp_path, X):
    path = tmp_path / "emb.csv"
    np.savetxt(path, X, delimiter=",", header="a,b,c,d,e", comments="")
    result = load_embeddings(path)
    assert result.shape == X.shape  # the header is not a data row
    np.testing.assert_allclose(result, X)


def test_csv_with_pandas_default_header(tmp_path, X):
    path = tmp_path / "emb.csv"
    pd.DataFrame(X).to_csv(path, index=False)  # header line "0,1,2,3,4"
    result = load_embeddings(path)
    assert result.shape == X.shape
    np.testing.assert_allclose(result, X)


def test_tsv(tmp_path, X):
    path = tmp_path / "emb.tsv"
    np.savetxt(path, X, delimiter="\t")
    result = load_embeddings(path)
    assert result.shape == X.shape
    np.testing.assert_allclose(result, X)


def test_tsv_with_header(tmp_path, X):
    path = tmp_path / "emb.tsv"
    np.savetxt(path, X, delimiter="\t", header="\t".join("abcde"), comments="")
    np.testing.assert_allclose(load_embeddings(path), X)


def test_suffix_is_case_insensitive(tmp_path, X):
    path = tmp_path / "EMB.CSV"
    np.savetxt(path, X, delimiter=",")
    np.testing.assert_allclose(load_embeddings(path), X)


def test_parquet_columns(tmp_path, X):
    path = tmp_path / "emb.parquet"
    pd.DataFrame(X, columns=[f"d{i}" for i in range(X.shape[1])]).to_parquet(path)
    result = load_embeddings(path)
    assert result.shape == X.shape
    np.testing.assert_allclose(result, X)


def test_parquet_list_column(tmp_path, X):
    path = tmp_path / "emb.parquet"
    pd.DataFrame({"vector": [list(row) for row in X]}).to_parquet(path)
    result = load_embeddings(path)
    assert result.shape == X.shape
    np.testing.assert_allclose(result, X)


def test_parquet_list_column_ragged(tmp_path):
    path = tmp_path / "emb.parquet"
    pd.DataFrame({"vector": [[1.0, 2.0], [3.0], [4.0, 5.0]]}).to_parquet(path)
    _raises_one_line("different lengths", load_embeddings, path)


# --------------------------------------------------------------------------------------------
# load_labels


def test_labels_npy_ints(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.array([3, 1, 2, 1]))
    result = load_labels(path)
    assert result.ndim == 1
    assert np.issubdtype(result.dtype, np.integer)
    np.testing.assert_array_equal(result, [3, 1, 2, 1])


def test_labels_npy_strings(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.array(["cat", "dog", "cat"]))
    result = load_labels(path)
    assert result.dtype.kind == "U"
    assert result.tolist() == ["cat", "dog", "cat"]


def test_labels_npy_column_is_flattened(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.array([[1], [2], [3]]))
    result = load_labels(path)
    assert result.shape == (3,)
    np.testing.assert_array_equal(result, [1, 2, 3])


def test_labels_txt_integers(tmp_path):
    path = tmp_path / "y.txt"
    path.write_text("3\n1\n-2\n4\n")
    result = load_labels(path)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, [3, 1, -2, 4])


@pytest.mark.parametrize("text", ["007\n1\n2\n", "+4\n1\n", "01\n1\n"])
def test_labels_txt_integers_that_do_not_round_trip_stay_names(tmp_path, text):
    path = tmp_path / "y.txt"
    path.write_text(text)
    result = load_labels(path)
    assert result.dtype.kind == "U"
    assert result.tolist() == text.split()  # "01" and "1" stay two classes


def test_labels_txt_strings(tmp_path):
    path = tmp_path / "y.txt"
    path.write_text("cat\ndog, big\n  bird \n12\n")
    result = load_labels(path)
    assert result.dtype.kind == "U"
    assert result.tolist() == ["cat", "dog, big", "bird", "12"]


def test_labels_txt_non_integer_numbers_stay_strings(tmp_path):
    path = tmp_path / "y.txt"
    path.write_text("1\n2.5\n3\n")
    result = load_labels(path)
    assert result.dtype.kind == "U"
    assert result.tolist() == ["1", "2.5", "3"]


def test_labels_csv_single_column(tmp_path):
    path = tmp_path / "y.csv"
    path.write_text("class\nb\na\nb\n")
    assert load_labels(path).tolist() == ["b", "a", "b"]


def test_labels_csv_single_integer_column(tmp_path):
    path = tmp_path / "y.csv"
    path.write_text("class\n2\n0\n1\n")
    result = load_labels(path)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, [2, 0, 1])


def test_labels_csv_label_column_among_several(tmp_path):
    path = tmp_path / "y.csv"
    pd.DataFrame({"id": [10, 11, 12], "label": ["x", "y", "x"], "note": ["p", "q", "r"]}).to_csv(
        path, index=False
    )
    assert load_labels(path).tolist() == ["x", "y", "x"]


def test_labels_csv_column_argument(tmp_path):
    path = tmp_path / "y.csv"
    pd.DataFrame({"id": [10, 11, 12], "label": ["x", "y", "x"], "kind": [5, 6, 5]}).to_csv(
        path, index=False
    )
    result = load_labels(path, column="kind")
    np.testing.assert_array_equal(result, [5, 6, 5])
    assert load_labels(path, column="id").tolist() == [10, 11, 12]


def test_labels_csv_unknown_column(tmp_path):
    path = tmp_path / "y.csv"
    pd.DataFrame({"id": [1, 2], "label": ["x", "y"]}).to_csv(path, index=False)
    message = _raises_one_line("nope", load_labels, path, column="nope")
    assert "label" in message


def test_labels_csv_several_columns_without_label(tmp_path):
    path = tmp_path / "y.csv"
    pd.DataFrame({"id": [1, 2], "kind": ["x", "y"]}).to_csv(path, index=False)
    message = _raises_one_line("several columns", load_labels, path)
    assert "--label-column" in message


def test_labels_tsv(tmp_path):
    path = tmp_path / "y.tsv"
    path.write_text("id\tlabel\n1\tu v\n2\tw\n")
    assert load_labels(path).tolist() == ["u v", "w"]


def test_labels_parquet(tmp_path):
    path = tmp_path / "y.parquet"
    pd.DataFrame({"label": ["x", "y", "x"], "id": [1, 2, 3]}).to_parquet(path)
    assert load_labels(path).tolist() == ["x", "y", "x"]


def test_labels_npz(tmp_path):
    path = tmp_path / "y.npz"
    np.savez(path, embeddings=np.zeros((3, 2)), labels=np.array([4, 5, 4]))
    np.testing.assert_array_equal(load_labels(path), [4, 5, 4])
    np.testing.assert_array_equal(load_labels(path, key="labels"), [4, 5, 4])


def test_labels_npz_without_key(tmp_path):
    path = tmp_path / "y.npz"
    np.savez(path, a=np.arange(3), b=np.arange(3))
    _raises_one_line("--key", load_labels, path)


# --------------------------------------------------------------------------------------------
# bad input: always a one-line InputError


def test_missing_file(tmp_path):
    message = _raises_one_line("not found", load_embeddings, tmp_path / "nope.npy")
    assert "nope.npy" in message
    _raises_one_line("not found", load_labels, tmp_path / "nope.txt")


def test_directory(tmp_path):
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    _raises_one_line("not a file", load_embeddings, folder)
    _raises_one_line("not a file", load_labels, folder)


@pytest.mark.parametrize("name", ["emb.npy", "emb.npz", "emb.csv", "emb.parquet"])
def test_empty_embedding_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    _raises_one_line("empty", load_embeddings, path)


@pytest.mark.parametrize("name", ["y.npy", "y.txt", "y.csv"])
def test_empty_label_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    _raises_one_line("empty", load_labels, path)


@pytest.mark.parametrize("name", ["emb.pkl", "emb.txt", "emb.json", "emb"])
def test_unsupported_embedding_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("1,2\n3,4\n")
    message = _raises_one_line("expected one of", load_embeddings, path)
    assert ".npy" in message


def test_unsupported_label_suffix(tmp_path):
    path = tmp_path / "y.json"
    path.write_text("[1, 2]")
    _raises_one_line("expected one of", load_labels, path)


def test_pickle_saved_as_npy(tmp_path):
    path = tmp_path / "x.npy"
    with open(path, "wb") as stream:
        pickle.dump({"embeddings": [[1.0, 2.0]]}, stream)
    _raises_one_line("pickle", load_embeddings, path)
    _raises_one_line("pickle", load_labels, path)


def test_object_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1.0, "a"], [None, 2]], dtype=object), allow_pickle=True)
    _raises_one_line("pickle", load_embeddings, path)
    _raises_one_line("pickle", load_labels, path)


def test_object_array_inside_npz(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, embeddings=np.array([[1.0, "a"], [None, 2]], dtype=object))
    _raises_one_line("pickle", load_embeddings, path)
    _raises_one_line("pickle", load_labels, path)


def test_garbage_npy(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY this is not really an array")
    _raises_one_line("x.npy", load_embeddings, path)


def test_garbage_npz(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04 broken zip")
    _raises_one_line("x.npz", load_embeddings, path)


def test_one_dimensional_embeddings(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.arange(5.0))
    _raises_one_line("2-D", load_embeddings, path)


def test_three_dimensional_embeddings(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.zeros((2, 3, 4)))
    message = _raises_one_line("2-D", load_embeddings, path)
    assert "3-D" in message


def test_empty_embeddings(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.zeros((0, 4)))
    _raises_one_line("empty", load_embeddings, path)
    _raises_one_line("empty", check_embeddings, np.zeros((3, 0)))


def test_nonfinite_rows_are_counted(tmp_path):
    X = np.ones((10, 4))
    X[2, 1] = np.nan
    X[7, 0] = np.inf
    X[7, 3] = np.nan  # same row twice: still one row
    path = tmp_path / "emb.npy"
    np.save(path, X)
    message = _raises_one_line("NaN or infinite", load_embeddings, path)
    assert "2 of 10 rows" in message
    message = _raises_one_line("NaN or infinite", check_embeddings, -X)
    assert "2 of 10 rows" in message


def test_nonfinite_rows_in_csv(tmp_path):
    path = tmp_path / "emb.csv"
    path.write_text("1,2\n3,nan\n5,6\n")
    message = _raises_one_line("NaN", load_embeddings, path)
    assert "1 of 3 rows" in message


def test_non_numeric_csv_columns(tmp_path):
    path = tmp_path / "emb.csv"
    path.write_text("a,b,c\n1,x,3\n4,y,6\n")
    message = _raises_one_line("numeric", load_embeddings, path)
    assert "b" in message


def test_non_numeric_csv_without_header(tmp_path):
    path = tmp_path / "emb.csv"
    path.write_text("1,2\n3,four\n")
    _raises_one_line("numeric", load_embeddings, path)


def test_string_embeddings_array():
    _raises_one_line("real numbers", check_embeddings, np.array([["a", "b"], ["c", "d"]]))
    _raises_one_line("real numbers", check_embeddings, np.zeros((2, 2), dtype=object))
    _raises_one_line("real numbers", check_embeddings, np.zeros((2, 2), dtype=complex))


def test_check_embeddings_keeps_arrays_without_copy(X):
    assert check_embeddings(X) is X
    np.testing.assert_array_equal(check_embeddings(X.tolist()), X)


def test_labels_with_nan(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.array([1.0, np.nan, 2.0, np.nan]))
    message = _raises_one_line("NaN", load_labels, path)
    assert "2 labels" in message


def test_labels_csv_with_missing_value(tmp_path):
    path = tmp_path / "y.csv"
    path.write_text("id,label\n1,a\n2,\n3,b\n")  # row 2 has no label
    _raises_one_line("NaN|missing|empty", load_labels, path)


def test_labels_two_columns(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.arange(6).reshape(3, 2))
    message = _raises_one_line("1-D", load_labels, path)
    assert "(3, 2)" in message
    _raises_one_line("1-D", check_labels, np.zeros((2, 2, 1), dtype=int))


def test_labels_empty_vector(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.array([], dtype=np.int64))
    _raises_one_line("empty", load_labels, path)


def test_mixed_type_object_labels():
    _raises_one_line("strings or all be integers", check_labels,
                     np.array([1, "a", 2], dtype=object))
    _raises_one_line("strings or all be integers", check_labels, pd.Series([1, "a", 2]))
    _raises_one_line("strings or all be integers", check_labels,
                     np.array(["a", None], dtype=object))


def test_labels_of_unsupported_dtype():
    _raises_one_line("integers or strings", check_labels, np.array([1 + 2j, 3 + 0j]))


# --------------------------------------------------------------------------------------------
# check_labels


def test_check_labels_list_of_str():
    result = check_labels(["b", "a", "b"])
    assert result.dtype.kind == "U"
    assert result.tolist() == ["b", "a", "b"]


def test_check_labels_list_of_int():
    result = check_labels([2, 0, 1])
    assert np.issubdtype(result.dtype, np.integer)
    np.testing.assert_array_equal(result, [2, 0, 1])


def test_check_labels_pandas_object_series_of_str():
    series = pd.Series(["cat", "dog", "cat"], dtype=object)
    result = check_labels(series)
    assert result.dtype.kind == "U"
    assert result.tolist() == ["cat", "dog", "cat"]


def test_check_labels_object_ints_become_int64():
    result = check_labels(np.array([3, 1, np.int32(2)], dtype=object))
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, [3, 1, 2])


def test_check_labels_column():
    result = check_labels(np.array([[4], [5], [4]]))
    assert result.shape == (3,)
    np.testing.assert_array_equal(result, [4, 5, 4])


def test_check_labels_uses_name_in_message():
    message = _raises_one_line("1-D", check_labels, np.zeros((2, 2)), name="my_labels.npy")
    assert message.startswith("my_labels.npy")


# --------------------------------------------------------------------------------------------
# encode_labels


def test_encode_train_only():
    y = np.array([30, 10, 20, 10])
    encoding = encode_labels(y)
    assert encoding.test is None
    assert encoding.classes.tolist() == [30, 10, 20]  # order of first appearance
    assert encoding.n_train_classes == 3
    np.testing.assert_array_equal(encoding.train, [0, 1, 2, 1])
    assert encoding.train.dtype == np.int64
    assert encoding.class_names == [30, 10, 20]
    assert all(type(name) is int for name in encoding.class_names)
    assert encoding.classes[encoding.display_order].tolist() == [10, 20, 30]


def test_codes_do_not_depend_on_what_the_classes_are_called():
    y = np.array([30, 10, 20, 10, 30])
    renamed = np.array(["zebra", "ant", "moth", "ant", "zebra"])
    np.testing.assert_array_equal(encode_labels(y).train, encode_labels(renamed).train)


def test_encode_test_only_classes_come_after_train_classes():
    y_train = np.array([3, 1, 1, 7])
    y_test = np.array([5, 1, 0, 3, 0, 7])
    encoding = encode_labels(y_train, y_test)
    assert encoding.classes.tolist() == [3, 1, 7, 5, 0]
    assert encoding.n_train_classes == 3
    assert encoding.classes[encoding.display_order].tolist() == [1, 3, 7, 0, 5]
    np.testing.assert_array_equal(encoding.classes[encoding.train], y_train)
    np.testing.assert_array_equal(encoding.classes[encoding.test], y_test)
    assert encoding.test.dtype == np.int64
    # test-only samples get codes >= n_train_classes, the others below it
    np.testing.assert_array_equal(encoding.test >= encoding.n_train_classes,
                                  np.isin(y_test, [0, 5]))


def test_encode_strings_round_trip():
    y_train = np.array(["dog", "cat", "dog", "emu"])
    y_test = np.array(["ant", "cat", "zebra", "emu", "dog", "ant"])
    encoding = encode_labels(y_train, y_test)
    assert encoding.classes.tolist() == ["dog", "cat", "emu", "ant", "zebra"]
    assert encoding.n_train_classes == 3
    np.testing.assert_array_equal(encoding.classes[encoding.train], y_train)
    np.testing.assert_array_equal(encoding.classes[encoding.test], y_test)
    assert encoding.class_names == ["dog", "cat", "emu", "ant", "zebra"]
    assert [encoding.class_names[c] for c in encoding.display_order] == [
        "cat", "dog", "emu", "ant", "zebra"]


def test_encode_no_test_only_classes():
    y_train = np.array(["b", "a", "c"])
    y_test = np.array(["c", "c", "a"])
    encoding = encode_labels(y_train, y_test)
    assert encoding.classes.tolist() == ["b", "a", "c"]
    assert encoding.n_train_classes == 3
    np.testing.assert_array_equal(encoding.test, [2, 2, 1])


def test_encode_mixed_kinds_compare_as_strings():
    encoding = encode_labels(np.array(["0", "1", "other"]), np.array([1, 0, 1]))
    assert encoding.class_names == ["0", "1", "other"]
    np.testing.assert_array_equal(encoding.test, [1, 0, 1])
    encoding = encode_labels(np.array([1, 2]), np.array(["2", "3"]))
    assert encoding.class_names == ["1", "2", "3"] and encoding.n_train_classes == 2
    np.testing.assert_array_equal(encoding.test, [1, 2])


def test_byte_string_labels_are_decoded():
    labels = check_labels(np.array([b"dog", b"cat"]))
    assert labels.dtype.kind == "U" and labels.tolist() == ["dog", "cat"]
    encoding = encode_labels(np.array(["a", "b"]), check_labels(np.array([b"a", b"b"])))
    assert encoding.class_names == ["a", "b"]


# --------------------------------------------------------------------------------------------
# to_float32, row_chunks, scan_rows, unit rows


def test_to_float32_whole_matrix(X):
    result = to_float32(X)
    assert result.dtype == np.float32
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, X.astype(np.float32))


def test_to_float32_rows(X):
    rows = np.array([11, 0, 5, 5, 3])
    result = to_float32(X, rows)
    assert result.dtype == np.float32
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, X[rows].astype(np.float32))


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Make every chunked loop use blocks of at most 15 values (3 rows of X)."""
    monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 15)


def test_to_float32_over_several_chunks(tmp_path, X, tiny_chunks):
    path = tmp_path / "emb.npy"
    np.save(path, X)
    mapped = load_embeddings(path)
    np.testing.assert_array_equal(to_float32(mapped), X.astype(np.float32))
    rows = np.random.default_rng(1).permutation(12)[:10]
    np.testing.assert_array_equal(to_float32(mapped, rows), X[rows].astype(np.float32))


def test_scan_rows_over_several_chunks(X, tiny_chunks):
    X = X.copy()
    X[[0, 4, 11], [1, 2, 0]] = [np.nan, np.inf, -np.inf]
    X[7, 3] = 1e200
    scan = scan_rows(X)
    assert (scan.nonfinite, scan.huge, scan.largest) == (3, 1, 1e200)
    assert len(list(row_chunks(*X.shape))) == 4


@pytest.mark.parametrize("scale", [1.0, 1e-300, 1e300, 3e38, 5e-324])
def test_unit_rows_neither_overflow_nor_underflow(scale, X, tiny_chunks):
    """x/||x|| is computed as (x/m)/||x/m|| with m = max|x|: the same unit rows at any scale
    a float64 can hold, all-zero rows kept at zero."""
    X = X.copy()
    X[2] = 0.0
    expected = X / np.where(np.linalg.norm(X, axis=1, keepdims=True) == 0, 1,
                            np.linalg.norm(X, axis=1, keepdims=True))
    if scale == 5e-324:  # the smallest subnormal: each row is a sign pattern
        scaled = np.sign(X) * scale
        expected = np.sign(X) / np.sqrt(np.maximum(np.count_nonzero(X, axis=1), 1))[:, None]
    else:
        scaled = X * scale
    np.testing.assert_allclose(normalised(scaled), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(unit_rows(scaled), expected, rtol=1e-6, atol=1e-7)
    assert unit_rows(scaled).dtype == np.float32 and not unit_rows(scaled)[2].any()


@pytest.mark.parametrize(
    "n_rows, n_cols, max_elements",
    [(0, 5, 10), (1, 5, 10), (10, 5, 10), (11, 5, 10), (7, 3, 100), (5, 50, 10), (100, 1, 7)],
)
def test_row_chunks_cover_every_row_once(n_rows, n_cols, max_elements):
    chunks = list(row_chunks(n_rows, n_cols, max_elements))
    covered = [row for start, stop in chunks for row in range(start, stop)]
    assert covered == list(range(n_rows))
    assert all(stop > start for start, stop in chunks)
    for start, stop in chunks:
        assert (stop - start) * n_cols <= max_elements or stop - start == 1


def test_row_chunks_default_is_one_chunk_for_small_inputs():
    assert list(row_chunks(1000, 16)) == [(0, 1000)]
