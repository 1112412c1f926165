"""Property-based tests of the invariants a user relies on (hypothesis).

Data come from a drawn seed, size and class count; every example is small so the whole file
runs in seconds. ``derandomize=True`` makes the examples the same on every run and machine.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from probekit import InputError, dual_probe, knn_probe

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FAST = {"C": (0.1, 10.0), "n_bootstrap": 50, "geometry": False}


def blobs(seed: int, n: int, dim: int, n_classes: int, separation: float = 1.5):
    """Gaussian classes with every class present at least twice."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.repeat(np.arange(n_classes), 2),
                        rng.integers(0, n_classes, n - 2 * n_classes)])
    rng.shuffle(y)
    centres = rng.normal(size=(n_classes, dim)) * separation
    return centres[y] + rng.normal(size=(n, dim)), y


def without_near_ties(train: np.ndarray, test: np.ndarray, depth: int) -> bool:
    """True when, in float64, no query's nearest ``depth + 1`` cosine neighbours lie closer
    than 1e-5 to each other: then float32 rounding cannot reorder them (a tie broken by row
    index may legitimately change when rows move)."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sims = np.sort(unit(test) @ unit(train).T, axis=1)[:, ::-1][:, :depth + 1]
    return bool((np.abs(np.diff(sims, axis=1)) > 1e-5).all())


def numbers(report) -> str:
    """The report as JSON without what legitimately differs between runs or names."""
    data = report.to_dict()
    data.pop("timings")
    return json.dumps(data, sort_keys=True)


problems = st.tuples(st.integers(0, 2**16), st.integers(24, 60), st.integers(2, 6),
                     st.integers(2, 4))


@SETTINGS
@given(problems)
def test_accuracies_lie_in_0_1_and_inside_their_intervals(problem):
    X, y = blobs(*problem)
    report = dual_probe(X, y, k=(1, 3, 5), **FAST)
    sections = [report.linear] + [scores for vote in report.votes
                                  for scores in report.knn[vote].values()]
    for scores in sections:
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert 0.0 <= scores[key] <= 1.0
        low, high = scores["ci95"]
        assert 0.0 <= low <= scores["accuracy"] <= high <= 1.0


@SETTINGS
@given(problems, st.floats(1e-3, 1e3), st.integers(0, 2**16))
def test_knn_numbers_ignore_row_order_and_scale_under_cosine(problem, scale, order_seed):
    X, y = blobs(*problem)
    cut = len(y) * 3 // 4
    train, y_train, test, y_test = X[:cut], y[:cut], X[cut:], y[cut:]
    assume(len(np.unique(y_train)) >= 2 and without_near_ties(train, test, 7))
    ks = tuple(k for k in (1, 3, 7) if k <= len(train))
    base = knn_probe(train, y_train, test, y_test, k=ks, n_bootstrap=50)
    order = np.random.default_rng(order_seed).permutation(len(train))
    moved = knn_probe(train[order], y_train[order], test, y_test, k=ks, n_bootstrap=50)
    scaled = knn_probe(train * scale, y_train, test * scale, y_test, k=ks, n_bootstrap=50)
    for other in (moved, scaled):
        for vote in ("majority", "weighted"):
            for k in ks:
                assert getattr(other, vote)[k] == getattr(base, vote)[k]


@SETTINGS
@given(problems, st.sampled_from(["holdout", "kfold", "loo", "given"]))
def test_renaming_the_classes_changes_no_number(problem, split):
    X, y = blobs(*problem)
    names = np.array(["zebra", "ant", "moth", "cat", "bee", "yak"])[y]
    options = dict(FAST, k=(1, 3))
    if split == "kfold":
        options["folds"] = 2
    elif split == "loo":
        options["loo"] = True
    elif split == "given":
        options.update(X_test=X[::3], y_test=None)
    runs = []
    for labels in (y, names):
        if split == "given":
            options["y_test"] = labels[::3]
        report = dual_probe(X, labels, save_predictions=True, **options)
        data = json.loads(numbers(report))
        info = data["input"]
        # the same classes in the same rows: counts per class agree once both are keyed by
        # the rows' first class; names, their order and hashes of names differ by design
        first_rows = {name: int(np.flatnonzero(labels == name)[0]) for name in info["classes"]}
        info["counts"] = sorted((first_rows[name], train, test) for name, train, test in zip(
            info.pop("classes"), info.pop("train_class_counts"), info.pop("test_class_counts"),
            strict=True))
        info.pop("test_labels_sha256")
        runs.append((json.dumps(data, sort_keys=True),
                     {key: value for key, value in report.arrays.items()
                      if key.startswith("correct")}))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        np.testing.assert_array_equal(value, runs[1][1][key])


@SETTINGS
@given(problems)
def test_two_runs_give_the_same_json_except_timings(problem):
    X, y = blobs(*problem)
    first = dual_probe(X, y, k=(1, 3), geometry=True, C=(1.0,), n_bootstrap=50)
    second = dual_probe(X, y, k=(1, 3), geometry=True, C=(1.0,), n_bootstrap=50)
    assert numbers(first) == numbers(second)


# ------------------------------------------------------------------ failures are InputErrors

special_values = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e300, -1e300, 1e39, 5e-324])


VALID = {"k": (1, 3), "metric": "cosine", "test_size": 0.3, "val_size": 0.2, "n_bootstrap": 20,
         "seed": 0, "C": (0.1, 10.0), "temperature": 0.07, "geometry": False, "tol": 1e-4,
         "max_iter": 100}
ODD = {
    "k": [(1,), (1, 5), (0,), (3, 100), (2, 2), (-1,), (10**9,)],
    "metric": ["euclidean", "ip", "manhattan"],
    "test_size": [0.5, 0.0, 1.0, -1.0, float("nan"), 0.99],
    "val_size": [0.5, 0.0, 1.5, float("nan"), 0.99],
    "n_bootstrap": [1, 0, -3],
    "seed": [7, -1, 2**32, 2**31],
    "C": [(1.0,), (0.0,), (float("inf"),), (), (-1.0,), (float("nan"),), (1e-300,), (1e300,)],
    "temperature": [1.0, 0.0, float("nan"), 1e-300, float("inf")],
    "geometry": [True],
    "tol": [float("nan"), float("inf"), 0.0, -1.0],
    "max_iter": [1, 0],
}


@st.composite
def hostile_inputs(draw):
    """Valid small inputs with exactly one odd thing (a shape, a value, a dtype, the labels, a
    split or an option), so that each odd thing reaches the code that must handle it."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n, dim, n_classes = draw(st.integers(12, 30)), draw(st.integers(2, 5)), draw(st.integers(2, 4))
    X = rng.normal(size=(n, dim))
    y = rng.integers(0, n_classes, n)
    options = dict(VALID)
    odd = draw(st.sampled_from(["none", "shape", "value", "scale", "dtype", "labels", "split",
                                "option", "option"]))
    if odd == "shape":
        n, dim = draw(st.sampled_from([(0, 3), (3, 0), (1, 3), (2, 3), (3, 3), (n, 1)]))
        X, y = rng.normal(size=(n, dim)), rng.integers(0, n_classes, n)
    elif odd == "value":
        X[rng.integers(0, n), rng.integers(0, dim)] = draw(special_values)
    elif odd == "scale":
        X *= draw(st.sampled_from([1e-30, 1e30, 1e37, 1e200, 1e-300]))
        if draw(st.booleans()):
            X[rng.integers(0, n)] = 0.0
        elif draw(st.booleans()):
            X[:] = X[0]  # every row identical
    elif odd == "dtype":
        dtype = draw(st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.bool_,
                                      np.complex64, "timedelta64[s]", "datetime64[s]"]))
        with np.errstate(all="ignore"):
            X = (X * 10).astype(dtype)
    elif odd == "labels":
        kind = draw(st.sampled_from(["str", "float", "nan", "bool", "2d", "short", "one",
                                     "singletons", "object"]))
        if kind == "str":
            y = np.array(["a", "b", "c", "d"])[y]
        elif kind == "float":
            y = y + 0.5
        elif kind == "nan":
            y = y.astype(float)
            y[0] = np.nan
        elif kind == "bool":
            y = y.astype(bool)
        elif kind == "2d":
            y = np.stack([y % 2, 1 - y % 2, (y > 1).astype(int)], axis=1)
        elif kind == "short":
            y = y[:-1]
        elif kind == "one":
            y = np.zeros(n, dtype=int)
        elif kind == "singletons":
            y = np.arange(n)
        else:
            y = np.array([1, "a"] * n, dtype=object)[:n]
    elif odd == "split":
        mode = draw(st.sampled_from(["loo", "folds", "given", "given-odd"]))
        if mode == "loo":
            options["loo"] = True
        elif mode == "folds":
            options["folds"] = draw(st.sampled_from([2, 3, 1, 0, 50]))
        else:
            m = draw(st.integers(1, 6))
            X_test = rng.normal(size=(m, dim if mode == "given" else dim + 1))
            options.update(X_test=X_test, y_test=rng.integers(0, n_classes + 1, m))
    elif odd == "option":
        name = draw(st.sampled_from(sorted(ODD)))
        options[name] = draw(st.sampled_from(ODD[name]))
    return X, y, options


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(hostile_inputs())
def test_every_failure_is_an_input_error(case):
    X, y, options = case
    try:
        report = dual_probe(X, y, **options)
    except InputError:
        return
    # what runs must give valid numbers and serialisable JSON (no NaN: allow_nan=False)
    json.loads(report.to_json())
    metric = report.main_metric
    for scores in [report.linear] + [s for v in report.votes for s in report.knn[v].values()]:
        assert scores[metric] is None or 0.0 <= scores[metric] <= 1.0


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_non_finite_inputs_are_named(kind):
    X, y = blobs(0, 30, 3, 2)
    X[4, 1] = float(kind)
    with pytest.raises(InputError, match="1 of 30 rows"):
        dual_probe(X, y, **FAST)
