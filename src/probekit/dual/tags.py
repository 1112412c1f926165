"""The route of :func:`probekit.dual_probe` for tags (an (N, C) 0/1 matrix per sample):
a given split or a seeded random holdout; the kNN tag scores and the one-vs-rest linear
probe, scored by mAP with its bootstrap CI, ROC-AUC, d′ and F1, and the label-free geometry with
the neighbours' tag agreement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probekit.dual.common import (
    Clock,
    Options,
    Progress,
    build_report,
    check_inputs,
    finite,
    search_rows,
    staged,
)
from probekit.errors import InputError
from probekit.geometry import diagnose
from probekit.labels import test_set_hash
from probekit.neighbours import PreparedRows, check_against_exact, search
from probekit.probes.knn import reading_k, resolve_k
from probekit.probes.multilabel import knn_tag_scores, linear_tag_probe
from probekit.probes.tagging import (
    mean_average_precision,
    paired_map_difference,
    tagging_scores,
    tags_without_positives,
    tune_thresholds,
)
from probekit.ranks import SINGLE, Ranks
from probekit.report import Report


def dual_probe_of_tags(X, Y, X_test, Y_test, tags, options: Options,
                        progress: Progress | None, ranks: Ranks = SINGLE) -> Report:
    clock = Clock()
    X, Y, X_test, Y_test = check_inputs(X, Y, X_test, Y_test, options, tags=True)
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
        knn_scores, val_scores, found, approximation = _knn_tag_runs(
            X, split, train_tags, test_tags, val_rows, fit_rows, ks, options, progress, ranks)
        knn_backend = found.backend
    with clock("linear_s"):
        linear = linear_tag_probe(X, train_tags, split.test_source, C=options.C,
                                  val_rows=val_rows, fit_rows=fit_rows,
                                  train_rows=split.train_rows, test_rows=split.test_rows,
                                  max_iter=options.max_iter, tol=options.tol,
                                  linear_backend=options.linear_backend,
                                  memory_budget=options.memory_budget, ranks=ranks)
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
        if approximation is not None:
            knn["approximation"] = approximation
        linear_scores = tagging_scores(test_tags, linear.scores, thresholds=linear.thresholds,
                                       **scored).to_dict()
        fixed_k = reading_k(ks)
        paired = paired_map_difference(test_tags, linear.scores, knn_scores[fixed_k],
                                       n_resamples=options.n_bootstrap, seed=options.seed)
    comparison = {"vote": "weighted", "k": fixed_k, "n_paired": paired["n_paired"],
                  "linear": paired["a"], "knn": paired["b"], "difference": paired["difference"],
                  "difference_ci95": paired["difference_ci95"], "p_value": paired["p_value"],
                  "test": paired["test"]}
    protocol = {**split.protocol, **_tag_protocol(options, ks, linear, knn_backend,
                                                  found.method)}
    if ranks.sharded:
        protocol["ranks"] = ranks.size
    geometry = {}
    if options.geometry and ranks.rank == 0:  # rank 0 alone describes the geometry
        with clock("geometry_s"):
            rows = X if split.train_rows is None else X[split.train_rows]
            geometry = diagnose(rows, None, metric=options.metric,
                                sample_size=options.geometry_sample, seed=options.seed,
                                backend=options.backend, method=options.search,
                                tags=train_tags).to_dict()
    info = _tag_input_section(X, split, train_tags, test_tags, kept_names)
    return build_report(clock, input=info, protocol=protocol, knn=finite(knn),
                   linear=finite({**linear_scores, **linear.protocol_dict()}),
                   linear_vs_knn=finite(comparison), warnings=tuple(notes), geometry=geometry)


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


def _knn_tag_runs(X, split: _TagSplit, train_tags, test_tags, val_rows, fit_rows, ks,
                  options: Options, progress, ranks: Ranks = SINGLE):
    """Tag scores of the test rows (one search at k_max against train) and of the validation
    rows against the rest of train (for the F1 thresholds), for every k; the test search; and
    with an approximate search, what it cost (:func:`_tag_approximation`)."""
    metric, backend, temperature = options.metric, options.backend, options.temperature
    train, test = search_rows(X, split.train_rows, split.test_source, split.test_rows,
                              options)
    found = search(test, train, max(ks), metric=metric, backend=backend,
                   method=options.search, progress=staged(progress, "kNN search"), ranks=ranks)
    scores = knn_tag_scores(found.indices, found.similarities, train_tags, ks, temperature)
    fit = train.take(fit_rows) if isinstance(train, PreparedRows) else train[fit_rows]
    validation = search(train[val_rows], fit, max(ks), metric=metric, backend=backend,
                        method=options.search, ranks=ranks)
    val_scores = knn_tag_scores(validation.indices, validation.similarities,
                                train_tags[fit_rows], ks, temperature)
    approximation = None
    if options.search.approximate:
        approximation = _tag_approximation(test, train, found, train_tags, test_tags, ks,
                                           options)
    return scores, val_scores, found, approximation


def _tag_approximation(test, train, found, train_tags, test_tags, ks, options: Options) -> dict:
    """Recall@k of the approximate test search on a seeded sample of 1000 test rows, and the
    kNN mAP of the sample at the fixed k with exact and with approximate neighbours."""
    check = check_against_exact(test, train, found, set(ks) | {1, 2, 10},
                                metric=options.metric, backend=options.backend,
                                seed=options.seed)
    fixed_k = reading_k(ks)
    truth = test_tags[check.rows]
    both = {}
    for way, neighbours in (("exact", check.exact), ("approximate", found)):
        rows = slice(None) if way == "exact" else check.rows
        scores = knn_tag_scores(neighbours.indices[rows], neighbours.similarities[rows],
                                train_tags, (fixed_k,), options.temperature)[fixed_k]
        both[way] = mean_average_precision(truth, scores)
    return {**check.summary(found, options.seed),
            "map": {"vote": "weighted", "k": fixed_k, **both}}


def _tag_protocol(options: Options, ks, linear, knn_backend: str, search: dict) -> dict:
    return {
        "task": "multilabel", "metric": options.metric, "k": list(ks), "votes": ["weighted"],
        "search": dict(search),
        "temperature": options.temperature,
        "knn_score": "similarity-weighted fraction of the k neighbours carrying the tag",
        "knn_preprocess": "l2" if options.metric == "cosine" else "none",
        "linear_preprocess": "standardize (train mean and std)",
        "C_grid": list(linear.sweep_grid), "val_size": options.val_size,
        "C_selection": "best validation mAP on a seeded random split of train (ties: lower "
                       "validation log-loss); refit on all of train",
        "solver": "one-vs-rest logistic regression, L-BFGS (probekit's own, float32 products)",
        "thresholds": "per tag, tuned for F1 on the validation split (kNN: validation rows "
                      "against the rest of train)",
        "max_iter": options.max_iter, "tol": options.tol,
        "bootstrap": {"resamples": options.n_bootstrap, "level": 0.95, "seed": options.seed},
        "backend": {"knn": knn_backend, "linear": linear.backend[0]},
        "memory_budget": options.memory_budget,
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
