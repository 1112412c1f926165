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
