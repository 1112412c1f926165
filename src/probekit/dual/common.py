"""What both routes of :func:`probekit.dual_probe` share: the options and their one check at
the door, the checks of the arrays, the stage clock and the one Report builder."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from probekit.errors import InputError
from probekit.geometry import check_extras, check_sample_size
from probekit.neighbours import SearchMethod, check_metric, check_representable, prepared_rows
from probekit.probes.knn import DEFAULT_K, DEFAULT_TEMPERATURE
from probekit.probes.linear import DEFAULT_C_GRID, DEFAULT_MAX_ITER, DEFAULT_TOL, DEFAULT_VAL_SIZE
from probekit.probes.logistic import resolve_linear_backend
from probekit.probes.standard import DEFAULT_MEMORY_BUDGET, check_memory_budget
from probekit.report import Report
from probekit.validate import check_dataset, check_embeddings, check_same_dimensions, check_tags
from probekit.version import __version__

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: what a long run reports while it works."""


@dataclass(frozen=True)
class Options:
    """Every option of :func:`dual_probe` (see its docstring), checked by :meth:`check`."""

    k: tuple = DEFAULT_K
    metric: str = "cosine"
    temperature: float = DEFAULT_TEMPERATURE
    loo: bool = False
    C: tuple = DEFAULT_C_GRID
    val_size: float = DEFAULT_VAL_SIZE
    test_size: float = 0.2
    folds: int | None = None
    seed: int = 0
    backend: str = "auto"
    search: SearchMethod = SearchMethod()
    linear_backend: str = "auto"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    n_bootstrap: int = 1000
    max_iter: int = DEFAULT_MAX_ITER
    tol: float = DEFAULT_TOL
    geometry: bool = True
    geometry_sample: int = 5000
    extra: tuple = ()
    projection: bool = False
    save_predictions: bool = False

    def check(self) -> Options:
        """Every value, once, before any work: one :class:`InputError` line per bad one."""
        check_metric(self.metric)
        if not isinstance(self.search, SearchMethod):
            raise InputError(f"search must be a SearchMethod, got {self.search!r}")
        self.search.check()
        resolve_linear_backend(self.linear_backend)
        check_memory_budget(self.memory_budget)
        if not self.k or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= 1 for v in self.k):
            raise InputError(f"k values must be positive integers, got {list(self.k)}")
        if not (is_real(self.temperature) and np.isfinite(self.temperature)
                and self.temperature > 0):
            raise InputError(f"temperature must be a positive number, got {self.temperature}")
        if not self.C or not all(is_real(c) and np.isfinite(c) and c > 0 for c in self.C):
            raise InputError(f"C values must be positive finite numbers, got {list(self.C)}")
        for name, fraction in (("validation size", self.val_size),
                               ("test size", self.test_size)):
            if not (is_real(fraction) and 0.0 < fraction < 1.0):
                raise InputError(f"{name} must be a fraction in (0, 1), got {fraction}")
        if self.loo and self.folds:
            raise InputError("choose leave-one-out or k-fold, not both")
        if self.folds is not None and not (is_integer(self.folds) and self.folds >= 2):
            raise InputError(f"folds must be an integer of at least 2, got {self.folds}")
        if not (is_integer(self.seed) and 0 <= self.seed < 2**32):
            raise InputError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        if not (is_integer(self.n_bootstrap) and self.n_bootstrap >= 1):
            raise InputError(f"bootstrap resamples must be an integer of at least 1, got "
                             f"{self.n_bootstrap}")
        if not (is_integer(self.max_iter) and self.max_iter >= 1):
            raise InputError(f"max_iter must be an integer of at least 1, got {self.max_iter}")
        if not (is_real(self.tol) and np.isfinite(self.tol) and self.tol >= 0):
            raise InputError(f"tol must be a finite number >= 0, got {self.tol}")
        if self.geometry:
            check_sample_size(self.geometry_sample)
            check_extras(self.extra)
        return self


def is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value,
                                                                                       bool)


def is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class Clock:
    """Seconds spent per stage, and in all."""

    STAGES = ("knn_s", "linear_s", "geometry_s", "bootstrap_s")

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds = dict.fromkeys(self.STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str):
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - tick

    def timings(self) -> dict:
        return {**{stage: round(value, 4) for stage, value in self.seconds.items()},
                "total_s": round(time.perf_counter() - self.started, 4)}


def build_report(clock: Clock, **sections) -> Report:
    """The one place a :class:`Report` is assembled."""
    return Report(probekit_version=__version__, timings=clock.timings(), **sections)


def staged(progress: Progress | None, stage: str, fold: int = 0, folds: int = 1):
    """The ``(done, total)`` callback of one stage (of one fold), or None."""
    if progress is None:
        return None
    label = stage if folds == 1 else f"{stage} (fold {fold + 1}/{folds})"
    return lambda done, total: progress(label, done, total)


def check_inputs(X, y, X_test, y_test, options: Options, *, tags: bool):
    """The arrays at the door: shapes, values, lengths, what the search can represent (counted
    over whole inputs, before any split), and which options fit the data."""
    if (X_test is None) != (y_test is None):
        raise InputError("pass both X_test and y_test, or neither")
    check = check_tags if tags else None
    if tags:
        for name, asked in {"leave-one-out": options.loo, "k-fold": options.folds,
                            "save_predictions": options.save_predictions,
                            "the 2-D map (projection)": options.projection,
                            "extra diagnostics": options.extra}.items():
            if asked:
                raise InputError(f"{name} is not available for multi-label labels yet")
        X, y = check_embeddings(X), check(y)
        if len(y) != X.shape[0]:
            raise InputError(f"embeddings have {X.shape[0]} rows but labels have {len(y)}")
    else:
        X, y = check_dataset(X, y)
    if X_test is not None:
        if options.loo:
            raise InputError("leave-one-out evaluates one set: do not combine it with a test set")
        if options.folds:
            raise InputError("k-fold makes its own splits: do not combine it with a test set")
        if tags:
            X_test, y_test = check_embeddings(X_test, name="test embeddings"), \
                check(y_test, name="test labels")
            if len(y_test) != X_test.shape[0]:
                raise InputError(f"test embeddings have {X_test.shape[0]} rows but test labels "
                                 f"have {len(y_test)}")
            if y_test.shape[1] != y.shape[1]:
                raise InputError(f"training labels have {y.shape[1]} tags, test labels "
                                 f"{y_test.shape[1]}")
        else:
            X_test, y_test = check_dataset(X_test, y_test, which="test")
        check_same_dimensions(X, X_test)
    check_representable(X, metric=options.metric, name="embeddings")
    if X_test is not None:
        check_representable(X_test, metric=options.metric, name="test embeddings")
    return X, y, X_test, y_test


def search_rows(X, train_rows, test_source, test_rows, options: Options):
    """The training and the test rows prepared for the kNN search (the same results either
    way): the test rows (the queries, read once per block of training rows) as a copy when it
    fits ``options.memory_budget``; the training rows prepared block by block when they are
    read, never copied: every search reads them in a pass or a few (the exact search block by
    block, the IVF scan a group of lists at a time, each rank of a sharded run its share), and
    so does the geometry."""
    train = prepared_rows(X, train_rows, metric=options.metric, memory_budget=0)
    test = prepared_rows(test_source, test_rows, metric=options.metric,
                         memory_budget=options.memory_budget)
    return train, test


def finite(section):
    """NaN and ±inf (a d' of an AUC of 1) become None, so the report stays valid JSON."""
    if isinstance(section, dict):
        return {key: finite(value) for key, value in section.items()}
    if isinstance(section, list):
        return [finite(value) for value in section]
    if isinstance(section, float) and not np.isfinite(section):
        return None
    return section
