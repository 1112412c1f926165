"""The route of :func:`probekit.dual_probe` for classes (one label per sample): a given split,
a stratified holdout, stratified k-fold or leave-one-out; both probes, their paired reading, the
geometry of the training rows, the figure data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probekit.arrays import RowsView, unit_rows
from probekit.dual.common import (
    Clock,
    Options,
    Progress,
    build_report,
    check_inputs,
    search_rows,
    staged,
)
from probekit.errors import InputError
from probekit.geometry import Geometry, Graph, describe
from probekit.geometry.clusters import class_means, nearest_means
from probekit.labels import LabelEncoding, encode_labels, test_set_hash
from probekit.neighbours import prepared_rows
from probekit.probes.knn import (
    READING_VOTE,
    VOTES,
    best_setting,
    correctness_columns,
    knn_predict,
    pooled_approximation,
    reading_k,
    resolve_k,
    score_knn,
)
from probekit.probes.linear import linear_predict
from probekit.probes.metrics import (
    SCORE_KEYS,
    bootstrap_ci,
    classification_scores,
    confusion_pairs,
    paired_comparison,
)
from probekit.ranks import SINGLE, Ranks
from probekit.report import Report
from probekit.splits import check_class_sizes, stratified_holdout, stratified_kfold


@dataclass(frozen=True)
class _Unit:
    """One train/test evaluation: rows of X for training, rows of ``test_source`` for testing."""

    train_rows: np.ndarray | None
    test_source: np.ndarray
    test_rows: np.ndarray | None
    train_codes: np.ndarray
    test_codes: np.ndarray


def dual_probe_of_classes(X, y, X_test, y_test, options: Options,
                           progress: Progress | None, ranks: Ranks = SINGLE) -> Report:
    clock = Clock()
    X, y, X_test, y_test = check_inputs(X, y, X_test, y_test, options, tags=False)
    encoding = encode_labels(y, y_test)
    if encoding.n_train_classes < 2:
        raise InputError(f"the labels hold a single class ('{encoding.class_names[0]}'); a "
                         "probe needs two")
    units, protocol = _make_units(X, X_test, encoding, options)
    smallest_train = min(X.shape[0] if u.train_rows is None else len(u.train_rows) for u in units)
    ks, notes = resolve_k(options.k, X.shape[0] - 1 if options.loo else smallest_train)
    notes += _unseen_classes_note(encoding)
    with clock("knn_s"):
        knn_runs, graph = _knn_runs(X, units, encoding, ks, options, progress, ranks)
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
            linear_backend=options.linear_backend, memory_budget=options.memory_budget,
            ranks=ranks, progress=staged(progress, "linear probe", fold, len(units))),
            unit.test_codes)
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
        if options.search.approximate:
            knn["approximation"] = pooled_approximation([p.approximation for p, _ in knn_runs])
        linear = _linear_section(linear_runs, linear_ci, encoding.n_train_classes)
        comparison = _linear_vs_knn(knn_runs, linear_runs, units, options)
    protocol.update(_class_protocol(options, ks, linear_runs[0][0], knn["backend"],
                                    knn_runs[0][0].graph.method))
    arrays = _figure_arrays(knn_runs, linear_runs, knn["best"], encoding, geometry)
    if options.save_predictions:
        arrays.update(_prediction_arrays(knn_runs, linear_runs, units, encoding,
                                         loo=options.loo))
    if ranks.sharded:
        protocol["ranks"] = ranks.size
    if options.projection and ranks.rank == 0:
        with clock("geometry_s"):
            info = _add_projection(arrays, X, X_test, units, encoding, options.seed)
        protocol["projection"] = info
        if info["warning"]:
            notes.append(info["warning"])
    return build_report(
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


def _knn_runs(X, units, encoding, ks, options: Options, progress, ranks: Ranks = SINGLE):
    """One neighbour search at k_max per fold (or one leave-one-out search), the votes for every
    k, and the first search's graph for the geometry (None without geometry)."""
    n_classes, runs, kept = len(encoding.classes), [], None
    vote = dict(n_classes=n_classes, k=ks, metric=options.metric,
                temperature=options.temperature, backend=options.backend,
                method=options.search, seed=options.seed, ranks=ranks)
    # a sharded run reads each rank's share of the rows when it searches: never a copy
    budget = 0 if ranks.sharded else options.memory_budget
    geometry = options.geometry and ranks.rank == 0  # rank 0 alone describes the geometry
    if options.loo:
        vectors = prepared_rows(X, metric=options.metric, memory_budget=budget)
        predicted = knn_predict(vectors, encoding.train, None, query_codes=encoding.train,
                                progress=staged(progress, "kNN search (leave-one-out)"),
                                **vote)
        runs.append((predicted, encoding.train))
        if geometry:
            kept = _GraphOfRows(Graph(predicted.graph, vectors, vectors, encoding.train,
                                      encoding.train, options.metric, True,
                                      recall=_recall(predicted)), X, encoding.train)
        return runs, kept
    for fold, unit in enumerate(units):
        train, test = search_rows(X, unit.train_rows, unit.test_source, unit.test_rows,
                                  options)
        predicted = knn_predict(train, unit.train_codes, test, query_codes=unit.test_codes,
                                progress=staged(progress, "kNN search", fold, len(units)),
                                **vote)
        runs.append((predicted, unit.test_codes))
        if geometry and fold == 0:
            rows = X if unit.train_rows is None else RowsView(X, unit.train_rows)
            kept = _GraphOfRows(Graph(predicted.graph, test, train, unit.test_codes,
                                      unit.train_codes, options.metric, False,
                                      recall=_recall(predicted)), rows, unit.train_codes)
    return runs, kept


def _recall(predicted) -> dict | None:
    return None if predicted.approximation is None else predicted.approximation["recall"]


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


def _class_protocol(options: Options, ks, linear, knn_backend: str, search: dict) -> dict:
    return {
        "loo": options.loo, "metric": options.metric, "k": list(ks), "votes": list(VOTES),
        "search": dict(search),
        "temperature": options.temperature, "tie_break": "nearest neighbour",
        "knn_preprocess": "l2" if options.metric == "cosine" else "none",
        "linear_preprocess": "standardize (train mean and std)",
        "C_grid": list(linear.C_grid), "val_size": options.val_size,
        "C_selection": "best accuracy on a stratified validation split of train "
                       "(ties: lower validation cross-entropy); refit on all of train",
        "solver": "multinomial logistic regression, L-BFGS (probekit's own, float32 "
                  "products)",
        "max_iter": options.max_iter, "tol": options.tol,
        "bootstrap": {"resamples": options.n_bootstrap, "level": 0.95, "seed": options.seed},
        "backend": {"knn": knn_backend, "linear": linear.backend[0]},
        "memory_budget": options.memory_budget,
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
    from probekit.geometry.projection import project_2d

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


