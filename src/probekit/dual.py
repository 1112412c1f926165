"""``dual_probe``: the linear probe and the kNN probe on one split, read together.

Orchestration only: every option is checked once at the door (for both routes), the labels
are encoded, the split is made, both probes run on the same train/test rows (one neighbour
search at k_max per fold, which the geometry reuses), every accuracy is bootstrapped with the
same resamples, and one builder assembles the :class:`~probekit.report.Report`. Single-label
classes and multi-label tags share all of it but the probes and their scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from probekit import __version__
from probekit.arrays import unit_rows
from probekit.errors import InputError
from probekit.geometry import Geometry, Graph, check_extras, check_sample_size, describe, diagnose
from probekit.geometry.clusters import class_means, nearest_means
from probekit.labels import LabelEncoding, encode_labels, test_set_hash
from probekit.neighbours import check_metric, check_representable, prepare_vectors, search
from probekit.probes.knn import (
    DEFAULT_K,
    DEFAULT_TEMPERATURE,
    READING_VOTE,
    VOTES,
    best_setting,
    correctness_columns,
    knn_predict,
    reading_k,
    resolve_k,
    score_knn,
)
from probekit.probes.linear import (
    DEFAULT_C_GRID,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    DEFAULT_VAL_SIZE,
    linear_predict,
)
from probekit.probes.metrics import (
    SCORE_KEYS,
    bootstrap_ci,
    classification_scores,
    confusion_pairs,
    paired_comparison,
)
from probekit.probes.multilabel import knn_tag_scores, linear_tag_probe
from probekit.probes.tagging import (
    paired_map_difference,
    tagging_scores,
    tags_without_positives,
    tune_thresholds,
)
from probekit.report import Report
from probekit.splits import check_class_sizes, stratified_holdout, stratified_kfold
from probekit.validate import (
    check_dataset,
    check_embeddings,
    check_same_dimensions,
    check_tags,
)

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
        if not self.k or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= 1 for v in self.k):
            raise InputError(f"k values must be positive integers, got {list(self.k)}")
        if not (_real(self.temperature) and np.isfinite(self.temperature)
                and self.temperature > 0):
            raise InputError(f"temperature must be a positive number, got {self.temperature}")
        if not self.C or not all(_real(c) and np.isfinite(c) and c > 0 for c in self.C):
            raise InputError(f"C values must be positive finite numbers, got {list(self.C)}")
        for name, fraction in (("validation size", self.val_size),
                               ("test size", self.test_size)):
            if not (_real(fraction) and 0.0 < fraction < 1.0):
                raise InputError(f"{name} must be a fraction in (0, 1), got {fraction}")
        if self.loo and self.folds:
            raise InputError("choose leave-one-out or k-fold, not both")
        if self.folds is not None and not (_integer(self.folds) and self.folds >= 2):
            raise InputError(f"folds must be an integer of at least 2, got {self.folds}")
        if not (_integer(self.seed) and 0 <= self.seed < 2**32):
            raise InputError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        if not (_integer(self.n_bootstrap) and self.n_bootstrap >= 1):
            raise InputError(f"bootstrap resamples must be an integer of at least 1, got "
                             f"{self.n_bootstrap}")
        if not (_integer(self.max_iter) and self.max_iter >= 1):
            raise InputError(f"max_iter must be an integer of at least 1, got {self.max_iter}")
        if not (_real(self.tol) and np.isfinite(self.tol) and self.tol >= 0):
            raise InputError(f"tol must be a finite number >= 0, got {self.tol}")
        if self.geometry:
            check_sample_size(self.geometry_sample)
            check_extras(self.extra)
        return self


def _real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value,
                                                                                       bool)


def _integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


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
        (N, C) 0/1 matrix of tags for multi-label data (then the tag probes of
        :mod:`probekit.probes.multilabel`, scored by mAP, ROC-AUC, d′ and F1; a given test set
        or a random holdout).
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
    backend : neighbour-search backend (see :mod:`probekit.neighbours`).
    n_bootstrap : bootstrap resamples of every accuracy CI.
    max_iter, tol : L-BFGS limits of each logistic-regression fit.
    geometry : add the geometry diagnostics (:func:`probekit.diagnose`) of the training rows,
        reusing the kNN probe's neighbour graph (test queries -> train, or the leave-one-out
        graph); under k-fold, of the first fold.
    geometry_sample : query sample of the pairwise diagnostics; extra : opt-in diagnostics.
    projection : also make the 2-D map of the figures (UMAP with the ``umap`` extra, else
        PCA; see :func:`probekit.render.plots.project_2d`).
    save_predictions : keep every test sample's correctness for each probe and setting in
        ``Report.arrays`` (saved in the ``.npz`` sidecar), so that two runs on the same test
        set can be compared with paired tests (:meth:`Report.compare`).
    tags : names of the tag columns of multi-label ``y`` (default ``0..C-1``).
    progress : called as ``progress(stage, done, total)`` during long steps.

    Returns
    -------
    Report
    """
    options = Options(
        k=tuple(k) if isinstance(k, Iterable) else (k,), metric=metric,
        temperature=temperature, loo=loo, C=tuple(C) if isinstance(C, Iterable) else (C,),
        val_size=val_size, test_size=test_size, folds=folds, seed=seed, backend=backend,
        n_bootstrap=n_bootstrap, max_iter=max_iter, tol=tol, geometry=geometry,
        geometry_sample=geometry_sample, extra=tuple(extra), projection=projection,
        save_predictions=save_predictions).check()
    if _is_tag_matrix(y) or _is_tag_matrix(y_test):
        return _dual_probe_of_tags(X, y, X_test, y_test, tags, options, progress)
    return _dual_probe_of_classes(X, y, X_test, y_test, options, progress)


def _is_tag_matrix(labels) -> bool:
    """An (N, C) label matrix with C > 1: multi-label tags."""
    return labels is not None and np.ndim(labels) == 2 and np.shape(labels)[1] > 1


class _Clock:
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


def _report(clock: _Clock, **sections) -> Report:
    """The one place a :class:`Report` is assembled."""
    return Report(probekit_version=__version__, timings=clock.timings(), **sections)


def _staged(progress: Progress | None, stage: str, fold: int = 0, folds: int = 1):
    """The ``(done, total)`` callback of one stage (of one fold), or None."""
    if progress is None:
        return None
    label = stage if folds == 1 else f"{stage} (fold {fold + 1}/{folds})"
    return lambda done, total: progress(label, done, total)


def _check_inputs(X, y, X_test, y_test, options: Options, *, tags: bool):
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


# --------------------------------------------------------------------------------------------
# classes: one label per sample


@dataclass(frozen=True)
class _Unit:
    """One train/test evaluation: rows of X for training, rows of ``test_source`` for testing."""

    train_rows: np.ndarray | None
    test_source: np.ndarray
    test_rows: np.ndarray | None
    train_codes: np.ndarray
    test_codes: np.ndarray


def _dual_probe_of_classes(X, y, X_test, y_test, options: Options,
                           progress: Progress | None) -> Report:
    clock = _Clock()
    X, y, X_test, y_test = _check_inputs(X, y, X_test, y_test, options, tags=False)
    encoding = encode_labels(y, y_test)
    if encoding.n_train_classes < 2:
        raise InputError(f"the labels hold a single class ('{encoding.class_names[0]}'); a "
                         "probe needs two")
    units, protocol = _make_units(X, X_test, encoding, options)
    smallest_train = min(X.shape[0] if u.train_rows is None else len(u.train_rows) for u in units)
    ks, notes = resolve_k(options.k, X.shape[0] - 1 if options.loo else smallest_train)
    notes += _unseen_classes_note(encoding)
    with clock("knn_s"):
        knn_runs, graph = _knn_runs(X, units, encoding, ks, options, progress)
    with clock("geometry_s"):
        geometry = None if graph is None else describe(
            graph.rows, graph.codes, n_classes=encoding.n_train_classes, graph=graph.graph,
            sample_size=options.geometry_sample, seed=options.seed, extra=options.extra,
            backend=options.backend)
    del graph
    with clock("linear_s"):
        linear_runs = [(linear_predict(
            X, unit.train_codes, unit.test_source, n_classes=encoding.n_train_classes,
            query_codes=unit.test_codes, C=options.C, val_size=options.val_size,
            seed=options.seed, max_iter=options.max_iter, tol=options.tol,
            train_rows=unit.train_rows, test_rows=unit.test_rows,
            progress=_staged(progress, "linear probe", fold, len(units))), unit.test_codes)
            for fold, unit in enumerate(units)]
    if geometry is not None and geometry.class_means is not None:
        geometry = _with_centroid_agreement(geometry, X, units, encoding, linear_runs[0][0],
                                            loo=options.loo)
    for predicted, _ in linear_runs:
        notes += [note for note in predicted.warnings if note not in notes]
    with clock("bootstrap_s"):
        knn_ci, linear_ci = _confidence_intervals(knn_runs, linear_runs, options)
        knn = _knn_section(knn_runs, knn_ci, encoding.n_train_classes)
        knn["backend"] = knn_runs[0][0].backend
        linear = _linear_section(linear_runs, linear_ci, encoding.n_train_classes)
        comparison = _linear_vs_knn(knn_runs, linear_runs, units, options)
    protocol.update(_class_protocol(options, ks, linear_runs[0][0].C_grid, knn["backend"]))
    arrays = _figure_arrays(knn_runs, linear_runs, knn["best"], encoding, geometry)
    if options.save_predictions:
        arrays.update(_prediction_arrays(knn_runs, linear_runs, units, encoding,
                                         loo=options.loo))
    if options.projection:
        with clock("geometry_s"):
            info = _add_projection(arrays, X, X_test, units, encoding, options.seed)
        protocol["projection"] = info
        if info["warning"]:
            notes.append(info["warning"])
    return _report(
        clock, input=_input_section(X, units, encoding, loo=options.loo), protocol=protocol,
        knn=knn, linear=linear, linear_vs_knn=comparison, warnings=tuple(notes),
        arrays=arrays, geometry={} if geometry is None else geometry.to_dict())


def _make_units(X, X_test, encoding, options: Options) -> tuple[list[_Unit], dict]:
    codes, names, seed = encoding.train, encoding.class_names, options.seed
    if X_test is not None:
        unit = _Unit(None, X_test, None, encoding.train, encoding.test)
        return [unit], {"split": "given", "seed": seed}
    if options.folds:
        folds = options.folds
        check_class_sizes(codes, names, minimum=folds, why=f"for {folds}-fold cross-validation")
        units = [_Unit(train, X, test, codes[train], codes[test])
                 for train, test in stratified_kfold(codes, n_folds=folds, seed=seed)]
        return units, {"split": "kfold", "folds": folds, "seed": seed}
    check_class_sizes(codes, names, minimum=2, why="to put one in train and one in test")
    train, test = stratified_holdout(codes, test_size=options.test_size, seed=seed)
    unit = _Unit(train, X, test, codes[train], codes[test])
    return [unit], {"split": "holdout", "test_size": options.test_size, "seed": seed}


def _unseen_classes_note(encoding: LabelEncoding) -> list[str]:
    n_classes, n_train = len(encoding.classes), encoding.n_train_classes
    if encoding.test is None or n_classes == n_train:
        return []
    unseen = encoding.class_names[n_train:]
    count = int(np.count_nonzero(encoding.test >= n_train))
    return [f"{len(unseen)} test class(es) never occur in training "
            f"({', '.join(map(str, unseen[:5]))}); their {count} samples count as errors"]


@dataclass(frozen=True)
class _GraphOfRows:
    """The neighbour graph the geometry reuses, with the rows and codes it describes."""

    graph: Graph
    rows: np.ndarray
    codes: np.ndarray


def _knn_runs(X, units, encoding, ks, options: Options, progress):
    """One neighbour search at k_max per fold (or one leave-one-out search), the votes for every
    k, and the first search's graph for the geometry (None without geometry)."""
    n_classes, runs, kept = len(encoding.classes), [], None
    vote = dict(n_classes=n_classes, k=ks, metric=options.metric,
                temperature=options.temperature, backend=options.backend)
    if options.loo:
        vectors = prepare_vectors(X, metric=options.metric)
        predicted = knn_predict(vectors, encoding.train, None, query_codes=encoding.train,
                                progress=_staged(progress, "kNN search (leave-one-out)"),
                                **vote)
        runs.append((predicted, encoding.train))
        if options.geometry:
            kept = _GraphOfRows(Graph(predicted.graph, vectors, vectors, encoding.train,
                                      encoding.train, options.metric, True), X, encoding.train)
        return runs, kept
    for fold, unit in enumerate(units):
        train = prepare_vectors(X, unit.train_rows, metric=options.metric)
        test = prepare_vectors(unit.test_source, unit.test_rows, metric=options.metric)
        predicted = knn_predict(train, unit.train_codes, test, query_codes=unit.test_codes,
                                progress=_staged(progress, "kNN search", fold, len(units)),
                                **vote)
        runs.append((predicted, unit.test_codes))
        if options.geometry and fold == 0:
            rows = X if unit.train_rows is None else X[unit.train_rows]
            kept = _GraphOfRows(Graph(predicted.graph, test, train, unit.test_codes,
                                      unit.train_codes, options.metric, False), rows,
                                unit.train_codes)
    return runs, kept


def _with_centroid_agreement(geometry: Geometry, X, units, encoding, linear_run, *,
                             loo: bool) -> Geometry:
    """``ncc_linear_agreement``: how often the nearest class mean of the training rows and the
    linear probe agree on the first unit's test rows."""
    means = geometry.class_means
    if loo:  # the geometry saw every row; the nearest-centroid rule must not see the test
        means = class_means(X, units[0].train_codes, encoding.n_train_classes,
                            units[0].train_rows)
    nearest = nearest_means(units[0].test_source, means, units[0].test_rows)
    return geometry.with_values(ncc_linear_agreement=float(
        np.mean(nearest == linear_run.predictions)))


def _confidence_intervals(knn_runs, linear_runs, options: Options):
    """Bootstrap CIs of every accuracy; probes scored on the same test samples share resamples
    (paired), and k-fold pools the out-of-fold predictions."""
    knn_correct = np.concatenate([correctness_columns(p, t) for p, t in knn_runs])
    linear_correct = np.concatenate([p.predictions == t for p, t in linear_runs])[:, None]
    resamples, seed = options.n_bootstrap, options.seed
    if options.loo:
        return (bootstrap_ci(knn_correct, n_resamples=resamples, seed=seed),
                bootstrap_ci(linear_correct, n_resamples=resamples, seed=seed))
    both = bootstrap_ci(np.hstack([knn_correct, linear_correct]), n_resamples=resamples,
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


def _linear_vs_knn(knn_runs, linear_runs, units, options: Options) -> dict:
    """The linear probe against the fixed kNN setting (:data:`probekit.probes.knn.READING_VOTE`
    at :func:`probekit.probes.knn.reading_k`) on the test rows both classified: McNemar's exact
    test and the paired bootstrap CI of ``knn − linear``. Under leave-one-out the kNN probe
    classified every row, the linear probe the holdout's test rows: those are compared."""
    ks = knn_runs[0][0].k
    k = reading_k(ks)
    column = ks.index(k)
    linear_correct = np.concatenate([p.predictions == t for p, t in linear_runs])
    if options.loo:
        (predicted, truth), rows = knn_runs[0], units[0].test_rows
        knn_correct = predicted.predictions[READING_VOTE][column][rows] == truth[rows]
    else:
        knn_correct = np.concatenate([p.predictions[READING_VOTE][column] == t
                                      for p, t in knn_runs])
    result = paired_comparison(linear_correct, knn_correct, n_resamples=options.n_bootstrap,
                               seed=options.seed)
    return {"vote": READING_VOTE, "k": k, "n_paired": result["n_paired"],
            "linear": result["a"], "knn": result["b"], "difference": result["difference"],
            "difference_ci95": result["difference_ci95"], "only_linear": result["only_a"],
            "only_knn": result["only_b"], "p_value": result["p_value"], "test": result["test"]}


def _class_protocol(options: Options, ks, C_grid, knn_backend: str) -> dict:
    return {
        "loo": options.loo, "metric": options.metric, "k": list(ks), "votes": list(VOTES),
        "temperature": options.temperature, "tie_break": "nearest neighbour",
        "knn_preprocess": "l2" if options.metric == "cosine" else "none",
        "linear_preprocess": "standardize (train mean and std)",
        "C_grid": list(C_grid), "val_size": options.val_size,
        "C_selection": "best accuracy on a stratified validation split of train "
                       "(ties: lower validation cross-entropy); refit on all of train",
        "solver": "multinomial logistic regression, L-BFGS (probekit's own, float32 "
                  "products)",
        "max_iter": options.max_iter, "tol": options.tol,
        "bootstrap": {"resamples": options.n_bootstrap, "level": 0.95, "seed": options.seed},
        "backend": {"knn": knn_backend, "linear": "numpy"},
    }


def _figure_arrays(knn_runs, linear_runs, best: dict, encoding: LabelEncoding,
                   geometry: Geometry | None) -> dict:
    """The arrays the figures need: the confusion matrices of the linear probe and of the best
    kNN setting (pooled over folds; :func:`probekit.probes.metrics.confusion_pairs` with the
    classes in display order), and the geometry's spectrum, k-occurrences and similarity
    histograms."""
    shown_as = _display_positions(encoding)
    n_classes = len(encoding.classes)

    def confusion(pairs):
        predicted, truth = (np.concatenate(part) for part in zip(*pairs, strict=True))
        return confusion_pairs(shown_as[truth], shown_as[predicted], n_classes)

    column = knn_runs[0][0].k.index(best["k"])
    arrays = {
        "confusion_linear": confusion((p.predictions, t) for p, t in linear_runs),
        "confusion_knn": confusion((p.predictions[best["vote"]][column], t)
                                   for p, t in knn_runs),
    }
    if geometry is not None:
        arrays.update(geometry.arrays)
    return arrays


def _display_positions(encoding: LabelEncoding) -> np.ndarray:
    """code -> its place among the classes in display order (by name)."""
    order = encoding.display_order
    positions = np.empty_like(order)
    positions[order] = np.arange(len(order))
    return positions


def _prediction_arrays(knn_runs, linear_runs, units, encoding, *, loo: bool) -> dict:
    """Per-sample correctness of every probe and setting, and the hashes that say which test
    samples they belong to (for paired comparisons)."""
    test_codes = np.concatenate([t for _, t in linear_runs])
    rows = (None if units[0].test_rows is None
            else np.concatenate([u.test_rows for u in units]))
    linear_hash = test_set_hash(test_codes, encoding.class_names, rows)
    settings = [f"{vote}@{k}" for vote in VOTES for k in knn_runs[0][0].k]
    return {
        "correct_linear": np.concatenate([p.predictions == t for p, t in linear_runs]),
        "correct_knn": np.concatenate([correctness_columns(p, t) for p, t in knn_runs]),
        "correct_knn_settings": np.array(settings),
        "pairing_linear": np.array(linear_hash),
        "pairing_knn": np.array(test_set_hash(encoding.train, encoding.class_names)
                                if loo else linear_hash),
    }


def _add_projection(arrays: dict, X, X_test, units, encoding, seed: int) -> dict:
    """The 2-D map of the rows (train and test) into ``arrays``; returns its description."""
    from probekit.render.plots import project_2d

    is_test = np.zeros(X.shape[0] + (0 if X_test is None else X_test.shape[0]), bool)
    if X_test is not None:
        rows, codes = np.concatenate([unit_rows(X), unit_rows(X_test)]), \
            np.concatenate([encoding.train, encoding.test])
        is_test[X.shape[0]:] = True
    else:
        rows, codes = X, encoding.train
        is_test[units[0].test_rows] = True
    projected, info = project_2d(rows, _display_positions(encoding)[codes], is_test, seed=seed)
    arrays.update(projected)
    return info


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
        "test_labels_sha256": test_set_hash(test_codes, encoding.class_names),
    }


# --------------------------------------------------------------------------------------------
# tags: an (N, C) 0/1 matrix per sample


def _dual_probe_of_tags(X, Y, X_test, Y_test, tags, options: Options,
                        progress: Progress | None) -> Report:
    clock = _Clock()
    X, Y, X_test, Y_test = _check_inputs(X, Y, X_test, Y_test, options, tags=True)
    names = [str(t) for t in (tags if tags is not None else range(Y.shape[1]))]
    if len(names) != Y.shape[1]:
        raise InputError(f"{len(names)} tag names for {Y.shape[1]} tag columns")
    split = _tag_split(X, Y, X_test, Y_test, options)
    kept, notes = _learnable_tags(split, names)
    train_tags, test_tags = split.train_tags[:, kept], split.test_tags[:, kept]
    kept_names = [names[i] for i in kept]
    # the validation split of train: C of the linear probe, F1 thresholds of both probes
    n_val = max(1, int(round(options.val_size * split.n_train)))
    shuffled = np.random.default_rng([options.seed, 1]).permutation(split.n_train)
    val_rows, fit_rows = np.sort(shuffled[:n_val]), np.sort(shuffled[n_val:])
    ks, k_notes = resolve_k(options.k, len(fit_rows))
    notes += k_notes
    with clock("knn_s"):
        knn_scores, val_scores, knn_backend = _knn_tag_runs(X, split, train_tags, val_rows,
                                                            fit_rows, ks, options, progress)
    with clock("linear_s"):
        linear = linear_tag_probe(X, train_tags, split.test_source, C=options.C,
                                  val_rows=val_rows, fit_rows=fit_rows,
                                  train_rows=split.train_rows, test_rows=split.test_rows,
                                  max_iter=options.max_iter, tol=options.tol)
    notes += linear.notes
    with clock("bootstrap_s"):
        scored = dict(n_bootstrap=options.n_bootstrap, seed=options.seed)
        knn = {"weighted": {str(value): tagging_scores(
            test_tags, knn_scores[value], **scored,
            thresholds=tune_thresholds(train_tags[val_rows], val_scores[value])).to_dict()
            for value in ks}}
        best_k = max(ks, key=lambda value: (knn["weighted"][str(value)]["map"], -value))
        knn["best"] = {"vote": "weighted", "k": best_k,
                       "map": knn["weighted"][str(best_k)]["map"]}
        knn["backend"] = knn_backend
        linear_scores = tagging_scores(test_tags, linear.scores, thresholds=linear.thresholds,
                                       **scored).to_dict()
        fixed_k = reading_k(ks)
        paired = paired_map_difference(test_tags, linear.scores, knn_scores[fixed_k],
                                       n_resamples=options.n_bootstrap, seed=options.seed)
    comparison = {"vote": "weighted", "k": fixed_k, "n_paired": paired["n_paired"],
                  "linear": paired["a"], "knn": paired["b"], "difference": paired["difference"],
                  "difference_ci95": paired["difference_ci95"], "p_value": paired["p_value"],
                  "test": paired["test"]}
    protocol = {**split.protocol, **_tag_protocol(options, ks, linear.sweep_grid, knn_backend)}
    geometry = {}
    if options.geometry:
        with clock("geometry_s"):
            rows = X if split.train_rows is None else X[split.train_rows]
            geometry = diagnose(rows, None, metric=options.metric,
                                sample_size=options.geometry_sample, seed=options.seed,
                                backend=options.backend, tags=train_tags).to_dict()
    info = _tag_input_section(X, split, train_tags, test_tags, kept_names)
    return _report(clock, input=info, protocol=protocol, knn=_finite(knn),
                   linear=_finite({**linear_scores, **linear.protocol_dict()}),
                   linear_vs_knn=_finite(comparison), warnings=tuple(notes), geometry=geometry)


@dataclass(frozen=True)
class _TagSplit:
    """Training and test rows of tag data: a given test set, or a seeded random holdout."""

    train_rows: np.ndarray | None
    test_rows: np.ndarray | None
    test_source: np.ndarray
    train_tags: np.ndarray
    test_tags: np.ndarray
    protocol: dict

    @property
    def n_train(self) -> int:
        return len(self.train_tags)


def _tag_split(X, Y, X_test, Y_test, options: Options) -> _TagSplit:
    seed = options.seed
    if X_test is not None:
        split = _TagSplit(None, None, X_test, Y, Y_test, {"split": "given", "seed": seed})
    else:  # tags have no strata: a seeded random holdout
        order = np.random.default_rng(seed).permutation(X.shape[0])
        n_test = max(1, int(round(options.test_size * X.shape[0])))
        test_rows, train_rows = np.sort(order[:n_test]), np.sort(order[n_test:])
        split = _TagSplit(train_rows, test_rows, X, Y[train_rows], Y[test_rows],
                          {"split": "holdout", "stratified": False,
                           "test_size": options.test_size, "seed": seed})
    if split.n_train < 4:
        raise InputError(f"the training set has {split.n_train} rows; the probes need at "
                         "least 4")
    return split


def _learnable_tags(split: _TagSplit, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """The tags that occur in training (the others cannot be learned) and notes about the
    left-out ones and those without a positive in the test set."""
    notes: list[str] = []
    learnable = split.train_tags.any(axis=0)
    if not learnable.all():
        dropped = [names[i] for i in np.flatnonzero(~learnable)]
        notes.append(f"{len(dropped)} tag(s) never occur in training and are left out: "
                     f"{', '.join(dropped[:10])}" + (" ..." if len(dropped) > 10 else ""))
    kept = np.flatnonzero(learnable)
    if len(kept) == 0:
        raise InputError("no tag occurs in the training labels")
    test_tags = split.test_tags[:, kept]
    absent = tags_without_positives(test_tags)
    if len(absent):
        missing = [names[kept[i]] for i in absent]
        notes.append(f"{len(absent)} tag(s) have no positive in the test set and are not "
                     f"averaged: {', '.join(missing[:10])}"
                     + (" ..." if len(missing) > 10 else ""))
    if not test_tags.any():
        raise InputError("no tag has a positive in the test set: nothing to score")
    return kept, notes


def _knn_tag_runs(X, split: _TagSplit, train_tags, val_rows, fit_rows, ks, options: Options,
                  progress):
    """Tag scores of the test rows (one search at k_max against train) and of the validation
    rows against the rest of train (for the F1 thresholds), for every k."""
    metric, backend, temperature = options.metric, options.backend, options.temperature
    train = prepare_vectors(X, split.train_rows, metric=metric)
    test = prepare_vectors(split.test_source, split.test_rows, metric=metric)
    found = search(test, train, max(ks), metric=metric, backend=backend,
                   progress=_staged(progress, "kNN search"))
    scores = knn_tag_scores(found.indices, found.similarities, train_tags, ks, temperature)
    validation = search(train[val_rows], train[fit_rows], max(ks), metric=metric,
                        backend=backend)
    val_scores = knn_tag_scores(validation.indices, validation.similarities,
                                train_tags[fit_rows], ks, temperature)
    return scores, val_scores, found.backend


def _tag_protocol(options: Options, ks, C_grid, knn_backend: str) -> dict:
    return {
        "task": "multilabel", "metric": options.metric, "k": list(ks), "votes": ["weighted"],
        "temperature": options.temperature,
        "knn_score": "similarity-weighted fraction of the k neighbours carrying the tag",
        "knn_preprocess": "l2" if options.metric == "cosine" else "none",
        "linear_preprocess": "standardize (train mean and std)",
        "C_grid": list(C_grid), "val_size": options.val_size,
        "C_selection": "best validation mAP on a seeded random split of train (ties: lower "
                       "validation log-loss); refit on all of train",
        "solver": "one-vs-rest logistic regression, L-BFGS (probekit's own, float32 products)",
        "thresholds": "per tag, tuned for F1 on the validation split (kNN: validation rows "
                      "against the rest of train)",
        "max_iter": options.max_iter, "tol": options.tol,
        "bootstrap": {"resamples": options.n_bootstrap, "level": 0.95, "seed": options.seed},
        "backend": {"knn": knn_backend, "linear": "numpy"},
        "d_prime": "d_prime: mean over tags of sqrt(2) * Phi^-1(AUC_tag), as HEAR's DPrime "
                   "(null when a tag's AUC is 1: d' is infinite); d_prime_macro_auc: of the "
                   "macro AUC (AudioSet / PANNs)",
    }


def _tag_input_section(X, split: _TagSplit, train_tags, test_tags, names: list[str]) -> dict:
    return {
        "task": "multilabel", "n_samples": int(X.shape[0]), "n_train": int(split.n_train),
        "n_test": int(len(test_tags)), "n_knn_test": int(len(test_tags)),
        "dim": int(X.shape[1]), "dtype": str(X.dtype), "n_tags": len(names), "tags": names,
        "train_tag_counts": train_tags.sum(axis=0).tolist(),
        "test_tag_counts": test_tags.sum(axis=0).tolist(),
        "mean_tags_per_sample": float(train_tags.sum(axis=1).mean()),
        "test_labels_sha256": test_set_hash(test_tags, names),
    }


def _finite(section):
    """NaN and ±inf (a d' of an AUC of 1) become None, so the report stays valid JSON."""
    if isinstance(section, dict):
        return {key: _finite(value) for key, value in section.items()}
    if isinstance(section, list):
        return [_finite(value) for value in section]
    if isinstance(section, float) and not np.isfinite(section):
        return None
    return section
