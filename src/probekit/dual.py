"""``dual_probe``: the linear probe and the kNN probe on one split, read together.

Thin orchestration over :mod:`probekit.knn`, :mod:`probekit.linear`, :mod:`probekit.splits` and
:mod:`probekit.metrics`: validate once at the door, encode the labels, make the split, run both
probes on the same train/test sets, bootstrap all accuracies with the same resamples, and
assemble a :class:`~probekit.report.Report`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from probekit import __version__
from probekit.arrays import unit_rows
from probekit.clusters import class_means, nearest_means
from probekit.compare import pairing_hash
from probekit.data import check_dataset, check_same_dimensions, encode_labels
from probekit.errors import InputError
from probekit.geometry import Geometry, Graph, check_extras, check_sample_size
from probekit.geometry import geometry as diagnostics
from probekit.knn import (
    DEFAULT_K,
    DEFAULT_TEMPERATURE,
    READING_VOTE,
    VOTES,
    KNNPredictions,
    best_setting,
    correctness_columns,
    knn_predict,
    reading_k,
    resolve_k,
    score_knn,
)
from probekit.linear import (
    DEFAULT_C_GRID,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    DEFAULT_VAL_SIZE,
    LinearPredictions,
    linear_predict,
)
from probekit.metrics import (
    bootstrap_ci,
    classification_scores,
    confusion_pairs,
    paired_comparison,
)
from probekit.neighbors import check_metric, check_representable, prepare_vectors
from probekit.report import SCORE_KEYS, Report
from probekit.splits import check_class_sizes, stratified_holdout, stratified_kfold

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Unit:
    """One train/test evaluation: rows of X for training, rows of ``test_source`` for testing."""

    train_rows: np.ndarray | None
    test_source: np.ndarray
    test_rows: np.ndarray | None
    train_codes: np.ndarray
    test_codes: np.ndarray


def dual_probe(
    X,
    y,
    *,
    X_test=None,
    y_test=None,
    k: Iterable[int] = DEFAULT_K,
    metric: str = "cosine",
    temperature: float = DEFAULT_TEMPERATURE,
    loo: bool = False,
    C: Iterable[float] = DEFAULT_C_GRID,
    val_size: float = DEFAULT_VAL_SIZE,
    test_size: float = 0.2,
    folds: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    n_bootstrap: int = 1000,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    geometry: bool = True,
    geometry_sample: int = 5000,
    extra: Iterable[str] = (),
    projection: bool = False,
    save_predictions: bool = False,
    tags: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Linear and kNN probes of an embedding space, on the same split, in one report.

    Parameters
    ----------
    X : (N, D) embeddings (array or memory map); y : (N,) labels, ints or strings, or an
        (N, C) 0/1 matrix of tags for multi-label data (then the probes and scores of
        :mod:`probekit.multilabel`: mAP, ROC-AUC, d′, F1; a given test set or a random holdout).
    X_test, y_test : a given test split (the paper's setting). Without it, a stratified holdout
        of ``test_size`` is made, or stratified k-fold with ``folds``.
    k : k values of the kNN probe (those above the training size are dropped with a warning).
    metric : ``"cosine"`` (default), ``"euclidean"`` or ``"ip"`` for the kNN probe.
    temperature : T of the weighted vote ``exp(s / T)``.
    loo : the kNN probe classifies every one of the N samples by all the others (leave-one-out)
        instead of using the split; the linear probe still uses the holdout split.
    C : grid of inverse regularisation strengths of the linear probe.
    val_size : fraction of train held out (stratified) to choose C.
    test_size : test fraction of the holdout split.
    folds : number of stratified folds (mean ± std across folds; CI over pooled predictions).
    seed : seeds the split, the validation split and the bootstrap.
    backend : neighbour-search backend (see :mod:`probekit.neighbors`).
    n_bootstrap : bootstrap resamples of every accuracy CI.
    max_iter, tol : L-BFGS limits of each logistic-regression fit.
    geometry : add the geometry diagnostics (:func:`probekit.diagnose`) of the training rows,
        reusing the kNN probe's neighbour graph (test queries -> train, or the leave-one-out
        graph); under k-fold, of the first fold.
    geometry_sample : query sample of the pairwise diagnostics; extra : opt-in diagnostics.
    projection : also make the 2-D map of the figures (UMAP with the ``umap`` extra, else
        PCA; see :func:`probekit.plots.project_2d`): slow the first time UMAP compiles.
    save_predictions : keep every test sample's correctness for each probe and setting in
        ``Report.arrays`` (saved in the ``.npz`` sidecar), so that two runs on the same test
        set can be compared with paired tests (:meth:`Report.compare`).
    tags : names of the tag columns of multi-label ``y`` (default ``0..C-1``).
    progress : called as ``progress(stage, done, total)`` during long steps.

    Returns
    -------
    Report
    """
    _check_options(k=k, metric=metric, temperature=temperature, C=C, val_size=val_size,
                   test_size=test_size, folds=folds, loo=loo, seed=seed,
                   n_bootstrap=n_bootstrap, max_iter=max_iter, tol=tol, geometry=geometry,
                   geometry_sample=geometry_sample, extra=extra)
    if _is_tag_matrix(y) or _is_tag_matrix(y_test):
        unsupported = {"leave-one-out": loo, "k-fold": folds, "save_predictions":
                       save_predictions, "the 2-D map (projection)": projection,
                       "extra diagnostics": tuple(extra)}
        for name, asked in unsupported.items():
            if asked:
                raise InputError(f"{name} is not available for multi-label labels yet")
        from probekit.multilabel import multilabel_probe

        return multilabel_probe(
            X, y, X_test=X_test, Y_test=y_test, tags=None if tags is None else list(tags), k=k,
            metric=metric, temperature=temperature, C=C, val_size=val_size,
            test_size=test_size, seed=seed, backend=backend, n_bootstrap=n_bootstrap,
            max_iter=max_iter, tol=tol, geometry=geometry, geometry_sample=geometry_sample,
            progress=progress)
    started = time.perf_counter()
    X, y = check_dataset(X, y)
    check_metric(metric)
    if (X_test is None) != (y_test is None):
        raise InputError("pass both X_test and y_test, or neither")
    if X_test is not None:
        if loo:
            raise InputError("leave-one-out evaluates one set: do not combine it with a test set")
        if folds:
            raise InputError("k-fold makes its own splits: do not combine it with a test set")
        X_test, y_test = check_dataset(X_test, y_test, which="test")
        check_same_dimensions(X, X_test)
    # what the search can represent, counted over whole inputs, before any split
    check_representable(X, metric=metric, name="embeddings")
    if X_test is not None:
        check_representable(X_test, metric=metric, name="test embeddings")

    extras = check_extras(extra) if geometry else ()
    encoding = encode_labels(y, y_test)
    names = encoding.class_names
    if encoding.n_train_classes < 2:
        raise InputError(f"the labels hold a single class ('{names[0]}'); a probe needs two")
    units, protocol = _make_units(X, X_test, encoding, folds=folds, test_size=test_size,
                                  seed=seed)
    notes: list[str] = []
    smallest_train = min(X.shape[0] if u.train_rows is None else len(u.train_rows) for u in units)
    ks, k_notes = resolve_k(k, X.shape[0] - 1 if loo else smallest_train)
    notes += k_notes
    n_classes = len(encoding.classes)
    if encoding.test is not None and n_classes > encoding.n_train_classes:
        unseen = names[encoding.n_train_classes:]
        count = int(np.count_nonzero(encoding.test >= encoding.n_train_classes))
        notes.append(f"{len(unseen)} test class(es) never occur in training "
                     f"({', '.join(map(str, unseen[:5]))}); their {count} samples count as errors")

    def report_stage(stage: str, fold: int):
        if progress is None:
            return None
        label = stage if len(units) == 1 else f"{stage} (fold {fold + 1}/{len(units)})"
        return lambda done, total: progress(label, done, total)

    knn_time = linear_time = geometry_time = 0.0
    knn_runs: list[tuple[KNNPredictions, np.ndarray]] = []
    linear_runs: list[tuple[LinearPredictions, np.ndarray]] = []
    shape = None

    def describe(rows_X, codes, graph: Graph) -> Geometry:
        return diagnostics(rows_X, codes, n_classes=encoding.n_train_classes, graph=graph,
                           sample_size=geometry_sample, seed=seed, extra=extras,
                           backend=backend)

    if loo:
        tick = time.perf_counter()
        vectors = prepare_vectors(X, metric=metric)
        predicted = knn_predict(
            vectors, encoding.train, None, n_classes=n_classes, k=ks, metric=metric,
            temperature=temperature, query_codes=encoding.train, backend=backend,
            progress=report_stage("kNN search (leave-one-out)", 0))
        knn_runs.append((predicted, encoding.train))
        knn_time += time.perf_counter() - tick
        if geometry:
            tick = time.perf_counter()
            shape = describe(X, encoding.train, Graph(predicted.graph, vectors, vectors,
                             encoding.train, encoding.train, metric, True))
            geometry_time += time.perf_counter() - tick
        del vectors
    for fold, unit in enumerate(units):
        if not loo:
            tick = time.perf_counter()
            train = prepare_vectors(X, unit.train_rows, metric=metric)
            test = prepare_vectors(unit.test_source, unit.test_rows, metric=metric)
            predicted = knn_predict(
                train, unit.train_codes, test, n_classes=n_classes, k=ks, metric=metric,
                temperature=temperature, query_codes=unit.test_codes, backend=backend,
                progress=report_stage("kNN search", fold))
            knn_runs.append((predicted, unit.test_codes))
            knn_time += time.perf_counter() - tick
            if geometry and fold == 0:
                tick = time.perf_counter()
                rows_X = X if unit.train_rows is None else X[unit.train_rows]
                shape = describe(rows_X, unit.train_codes, Graph(
                    predicted.graph, test, train, unit.test_codes, unit.train_codes, metric,
                    False))
                geometry_time += time.perf_counter() - tick
            del train, test
        tick = time.perf_counter()
        linear_runs.append((linear_predict(
            X, unit.train_codes, unit.test_source, n_classes=encoding.n_train_classes,
            query_codes=unit.test_codes, C=C, val_size=val_size, seed=seed, max_iter=max_iter,
            tol=tol, train_rows=unit.train_rows, test_rows=unit.test_rows,
            progress=report_stage("linear probe", fold)), unit.test_codes))
        linear_time += time.perf_counter() - tick
    if shape is not None and shape.class_means is not None:
        means = shape.class_means
        if loo:  # the geometry saw every row; the nearest-centroid rule must not see the test
            means = class_means(X, units[0].train_codes, encoding.n_train_classes,
                                units[0].train_rows)
        nearest = nearest_means(units[0].test_source, means, units[0].test_rows)
        shape = shape.with_values(ncc_linear_agreement=float(
            np.mean(nearest == linear_runs[0][0].predictions)))
    for predicted, _ in linear_runs:
        notes += [note for note in predicted.warnings if note not in notes]

    tick = time.perf_counter()
    knn_ci, linear_ci = _confidence_intervals(knn_runs, linear_runs, loo=loo,
                                              n_bootstrap=n_bootstrap, seed=seed)
    knn = _knn_section(knn_runs, knn_ci, encoding.n_train_classes)
    knn["backend"] = knn_runs[0][0].backend
    linear = _linear_section(linear_runs, linear_ci, encoding.n_train_classes)
    comparison = _linear_vs_knn(knn_runs, linear_runs, units, loo=loo, n_bootstrap=n_bootstrap,
                                seed=seed)
    bootstrap_time = time.perf_counter() - tick

    protocol.update({
        "loo": loo, "metric": metric, "k": list(ks), "votes": list(VOTES),
        "temperature": temperature, "tie_break": "nearest neighbour",
        "knn_preprocess": "l2" if metric == "cosine" else "none",
        "linear_preprocess": "standardize (train mean and std)",
        "C_grid": list(linear_runs[0][0].C_grid), "val_size": val_size,
        "C_selection": "best accuracy on a stratified validation split of train "
                       "(ties: lower validation cross-entropy); refit on all of train",
        "solver": "multinomial logistic regression, L-BFGS (probekit's own, float32 "
                  "products)",
        "max_iter": max_iter, "tol": tol,
        "bootstrap": {"resamples": n_bootstrap, "level": 0.95, "seed": seed},
        "backend": {"knn": knn["backend"], "linear": "numpy"},
    })
    order = encoding.display_order
    arrays = _figure_arrays(knn_runs, linear_runs, knn["best"], n_classes, shape, order)
    if save_predictions:
        arrays.update(_prediction_arrays(knn_runs, linear_runs, units, encoding, loo=loo))
    if projection:
        tick = time.perf_counter()
        from probekit.plots import project_2d

        is_test = np.zeros(X.shape[0] + (0 if X_test is None else X_test.shape[0]), bool)
        if X_test is not None:
            rows_X, codes = np.concatenate([unit_rows(X), unit_rows(X_test)]), \
                np.concatenate([encoding.train, encoding.test])
            is_test[X.shape[0]:] = True
        else:
            rows_X, codes = X, encoding.train
            is_test[units[0].test_rows] = True
        position = np.empty_like(order)  # the map's codes in display order, as the report's
        position[order] = np.arange(len(order))
        projected, info = project_2d(rows_X, position[codes], is_test, seed=seed)
        arrays.update(projected)
        protocol["projection"] = info
        if info["warning"]:
            notes.append(info["warning"])
        geometry_time += time.perf_counter() - tick
    return Report(
        probekit_version=__version__,
        input=_input_section(X, units, encoding, loo=loo),
        protocol=protocol, knn=knn, linear=linear, linear_vs_knn=comparison,
        warnings=tuple(notes), arrays=arrays,
        geometry={} if shape is None else shape.to_dict(),
        timings={"knn_s": round(knn_time, 4), "linear_s": round(linear_time, 4),
                 "geometry_s": round(geometry_time, 4),
                 "bootstrap_s": round(bootstrap_time, 4),
                 "total_s": round(time.perf_counter() - started, 4)},
    )


def _check_options(*, k, metric, temperature, C, val_size, test_size, folds, loo, seed,
                   n_bootstrap, max_iter, tol, geometry, geometry_sample, extra) -> None:
    """Every option of :func:`dual_probe`, checked at the door for every route (single- and
    multi-label): one :class:`InputError` line per bad value, before any work."""
    check_metric(metric)
    values = list(k) if isinstance(k, Iterable) else [k]
    if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                             and v >= 1 for v in values):
        raise InputError(f"k values must be positive integers, got {values}")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature)
            and temperature > 0):
        raise InputError(f"temperature must be a positive number, got {temperature}")
    grid = list(C) if isinstance(C, Iterable) else [C]
    if not grid or not all(isinstance(c, (int, float)) and np.isfinite(c) and c > 0
                           for c in grid):
        raise InputError(f"C values must be positive finite numbers, got {grid}")
    for name, fraction in (("validation size", val_size), ("test size", test_size)):
        if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
            raise InputError(f"{name} must be a fraction in (0, 1), got {fraction}")
    if loo and folds:
        raise InputError("choose leave-one-out or k-fold, not both")
    if folds is not None and not (isinstance(folds, (int, np.integer)) and folds >= 2):
        raise InputError(f"folds must be an integer of at least 2, got {folds}")
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**32):
        raise InputError(f"seed must be an integer in [0, 2**32), got {seed}")
    if not (isinstance(n_bootstrap, (int, np.integer)) and n_bootstrap >= 1):
        raise InputError(f"bootstrap resamples must be an integer of at least 1, got "
                         f"{n_bootstrap}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise InputError(f"max_iter must be an integer of at least 1, got {max_iter}")
    if not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol >= 0):
        raise InputError(f"tol must be a finite number >= 0, got {tol}")
    if geometry:
        check_sample_size(geometry_sample)
        check_extras(extra)


def _linear_vs_knn(knn_runs, linear_runs, units, *, loo: bool, n_bootstrap: int,
                   seed: int) -> dict:
    """The linear probe against the fixed kNN setting (:data:`probekit.knn.READING_VOTE` at
    :func:`probekit.knn.reading_k`) on the test rows both classified: McNemar's exact test
    and the paired bootstrap CI of ``knn − linear``. Under leave-one-out the kNN probe
    classified every row, the linear probe the holdout's test rows: those are compared."""
    ks = knn_runs[0][0].k
    k = reading_k(ks)
    column = ks.index(k)
    linear_correct = np.concatenate([p.predictions == t for p, t in linear_runs])
    if loo:
        (predicted, truth), rows = knn_runs[0], units[0].test_rows
        knn_correct = predicted.predictions[READING_VOTE][column][rows] == truth[rows]
    else:
        knn_correct = np.concatenate([p.predictions[READING_VOTE][column] == t
                                      for p, t in knn_runs])
    result = paired_comparison(linear_correct, knn_correct, n_resamples=n_bootstrap, seed=seed)
    return {"vote": READING_VOTE, "k": k, "n_paired": result["n_paired"],
            "linear": result["a"], "knn": result["b"], "difference": result["difference"],
            "difference_ci95": result["difference_ci95"], "only_linear": result["only_a"],
            "only_knn": result["only_b"], "p_value": result["p_value"], "test": result["test"]}


def _figure_arrays(knn_runs, linear_runs, best: dict, n_classes: int, shape,
                   order: np.ndarray) -> dict:
    """The arrays the figures need: the confusion matrices of the linear probe and of the best
    kNN setting (pooled over folds; :func:`probekit.metrics.confusion_pairs` in display
    ``order``), and the geometry's spectrum, k-occurrences and similarity histograms."""
    shown_as = np.empty_like(order)  # code -> its place in display order
    shown_as[order] = np.arange(len(order))

    def confusion(pairs):
        predicted, truth = (np.concatenate(part) for part in zip(*pairs, strict=True))
        return confusion_pairs(shown_as[truth], shown_as[predicted], n_classes)

    column = knn_runs[0][0].k.index(best["k"])
    arrays = {
        "confusion_linear": confusion((p.predictions, t) for p, t in linear_runs),
        "confusion_knn": confusion((p.predictions[best["vote"]][column], t)
                                   for p, t in knn_runs),
    }
    if shape is not None:
        arrays.update(shape.arrays)
    return arrays


def _is_tag_matrix(labels) -> bool:
    """An (N, C) label matrix with C > 1: multi-label tags."""
    return labels is not None and np.ndim(labels) == 2 and np.shape(labels)[1] > 1


def _prediction_arrays(knn_runs, linear_runs, units, encoding, *, loo: bool) -> dict:
    """Per-sample correctness of every probe and setting, and the hashes that say which test
    samples they belong to (for paired comparisons)."""
    test_codes = np.concatenate([t for _, t in linear_runs])
    rows = (None if units[0].test_rows is None
            else np.concatenate([u.test_rows for u in units]))
    linear_hash = pairing_hash(test_codes, encoding.class_names, rows)
    settings = [f"{vote}@{k}" for vote in VOTES for k in knn_runs[0][0].k]
    return {
        "correct_linear": np.concatenate([p.predictions == t for p, t in linear_runs]),
        "correct_knn": np.concatenate([correctness_columns(p, t) for p, t in knn_runs]),
        "correct_knn_settings": np.array(settings),
        "pairing_linear": np.array(linear_hash),
        "pairing_knn": np.array(pairing_hash(encoding.train, encoding.class_names, None)
                                if loo else linear_hash),
    }


def _make_units(X, X_test, encoding, *, folds, test_size, seed) -> tuple[list[_Unit], dict]:
    codes, names = encoding.train, encoding.class_names
    if X_test is not None:
        unit = _Unit(None, X_test, None, encoding.train, encoding.test)
        return [unit], {"split": "given", "seed": seed}
    if folds:
        check_class_sizes(codes, names, minimum=folds, why=f"for {folds}-fold cross-validation")
        units = [_Unit(train, X, test, codes[train], codes[test])
                 for train, test in stratified_kfold(codes, n_folds=folds, seed=seed)]
        return units, {"split": "kfold", "folds": folds, "seed": seed}
    check_class_sizes(codes, names, minimum=2, why="to put one in train and one in test")
    train, test = stratified_holdout(codes, test_size=test_size, seed=seed)
    unit = _Unit(train, X, test, codes[train], codes[test])
    return [unit], {"split": "holdout", "test_size": test_size, "seed": seed}


def _confidence_intervals(knn_runs, linear_runs, *, loo, n_bootstrap, seed):
    """Bootstrap CIs of every accuracy; probes scored on the same test samples share resamples
    (paired), and k-fold pools the out-of-fold predictions."""
    knn_correct = np.concatenate([correctness_columns(p, t) for p, t in knn_runs])
    linear_correct = np.concatenate([p.predictions == t for p, t in linear_runs])[:, None]
    if loo:
        return (bootstrap_ci(knn_correct, n_resamples=n_bootstrap, seed=seed),
                bootstrap_ci(linear_correct, n_resamples=n_bootstrap, seed=seed))
    both = bootstrap_ci(np.hstack([knn_correct, linear_correct]), n_resamples=n_bootstrap,
                        seed=seed)
    return both[:-1], both[-1:]


def _knn_section(knn_runs, ci95, n_train_classes) -> dict:
    per_run = [score_knn(p, t, n_classes=n_train_classes, ci95=ci95) for p, t in knn_runs]
    section = {vote: {str(k): _combine([run[vote][k].to_dict() for run in per_run])
                      for k in knn_runs[0][0].k} for vote in VOTES}
    section["best"] = best_setting(section)
    return section


def _linear_section(linear_runs, ci95, n_train_classes) -> dict:
    scores = [classification_scores(t, p.predictions, ci95=ci95[0], true_rank=p.true_rank,
                                    n_classes=n_train_classes).to_dict()
              for p, t in linear_runs]
    section = _combine(scores)
    details = [p.protocol_dict() for p, _ in linear_runs]
    if len(details) == 1:
        return {**section, **details[0]}
    chosen = [d["C"] for d in details]
    section["C"] = max(sorted(set(chosen)), key=chosen.count)
    section["C_per_fold"] = chosen
    section["C_grid"] = details[0]["C_grid"]
    if details[0]["val_accuracy"]:
        section["val_accuracy"] = [float(v) for v in
                                  np.mean([d["val_accuracy"] for d in details], axis=0)]
    section["folds"] = details
    return section


def _combine(scores: list[dict]) -> dict:
    """One run's scores as they are; several folds' as mean and ``*_std`` (population std)."""
    if len(scores) == 1:
        return scores[0]
    out = {}
    for key in SCORE_KEYS:
        if key in scores[0]:
            values = np.array([s[key] for s in scores])
            out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    out["ci95"] = scores[0]["ci95"]
    return out


def _input_section(X, units, encoding, *, loo) -> dict:
    n_classes = len(encoding.classes)
    if units[0].train_rows is None:
        n_train, n_test = X.shape[0], len(units[0].test_codes)
        train_counts = np.bincount(encoding.train, minlength=n_classes)
    else:  # holdout: the split; k-fold: the mean fold (every sample is tested once)
        n_train = int(round(np.mean([len(u.train_rows) for u in units])))
        n_test = int(sum(len(u.test_codes) for u in units))
        train_counts = np.rint(np.mean([np.bincount(u.train_codes, minlength=n_classes)
                                        for u in units], axis=0)).astype(np.int64)
    test_codes = np.concatenate([u.test_codes for u in units])
    order = encoding.display_order  # computed on codes by appearance, shown by name
    return {
        "n_samples": int(X.shape[0]),
        "n_train": n_train,
        "n_test": n_test,
        "n_knn_test": int(X.shape[0]) if loo else n_test,
        "dim": int(X.shape[1]),
        "dtype": str(X.dtype),
        "n_classes": n_classes,
        "classes": [encoding.class_names[c] for c in order],
        "train_class_counts": train_counts[order].tolist(),
        "test_class_counts": np.bincount(test_codes, minlength=n_classes)[order].tolist(),
        "test_labels_sha256": hashlib.sha256(
            np.ascontiguousarray(test_codes, dtype="<i8").tobytes()
            + repr(encoding.class_names).encode()).hexdigest(),
    }
