import numpy as np
import pytest

from probekit.errors import InputError
from probekit.splits import check_class_sizes, stratified_holdout, stratified_kfold


def test_holdout_is_stratified_disjoint_and_complete():
    codes = np.repeat(np.arange(4), [50, 20, 7, 2])
    train, test = stratified_holdout(codes, test_size=0.2, seed=0)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(codes)))
    assert np.bincount(codes[test]).tolist() == [10, 4, 1, 1]  # round(0.2 n), at least 1


def test_holdout_is_seeded():
    codes = np.arange(100) % 5
    a = stratified_holdout(codes, seed=1)
    b = stratified_holdout(codes, seed=1)
    c = stratified_holdout(codes, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_holdout_keeps_singletons_in_train():
    codes = np.array([0, 0, 0, 1])
    train, test = stratified_holdout(codes, test_size=0.25, seed=0)
    assert 3 in train and codes[test].tolist() == [0]


def test_holdout_rejects_bad_fraction():
    with pytest.raises(InputError, match="fraction"):
        stratified_holdout(np.arange(10) % 2, test_size=1.5)


def test_kfold_partitions_every_sample_once():
    codes = np.arange(53) % 3
    folds = stratified_kfold(codes, n_folds=5, seed=0)
    tests = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tests), np.arange(53))
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0
        assert set(codes[train]) == {0, 1, 2}


def test_class_size_error_names_the_classes():
    codes = np.array([0, 0, 0, 1, 2, 2])
    with pytest.raises(InputError, match=r"'bird' \(1\)") as error:
        check_class_sizes(codes, ["ant", "bird", "cow"], minimum=2, why="to split")
    assert "ant" not in str(error.value) and "\n" not in str(error.value)
    check_class_sizes(codes, ["ant", "bird", "cow"], minimum=1, why="to split")
