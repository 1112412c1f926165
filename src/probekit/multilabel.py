"""The dual probe for multi-label (tagging) data: AudioSet / FSD50K style.

Labels are an (N, C) 0/1 matrix of tags. The two probes:

- **kNN**: the score of tag c for a query is the similarity-weighted fraction of its k nearest
  training rows that carry c, ``s_c = Σ_j w_j y_jc / Σ_j w_j`` with ``w_j = exp((s_j − s_1)/T)``
  (the weights of the single-label weighted vote); every k from one search.
- **linear**: one-vs-rest logistic regression on standardised features, one L2-penalised
  binary problem per tag (scikit-learn's objective per tag, solved jointly: the problems are
  independent, so the joint minimiser is every tag's own); C is swept on a seeded validation
  split of train and chosen by validation mAP, then refitted on all of train.

Both are scored by :mod:`probekit.tagging`: mAP with a bootstrap CI, ROC-AUC and d′, micro and
macro F1 at 0.5 and at per-tag thresholds tuned for F1 on the validation split. Tags that never
occur in training cannot be learned and are left out (with a warning); tags without a positive
in the test set are listed in the warnings and not averaged.

References: Gemmeke et al., "Audio Set", ICASSP 2017 (mAP, d′); Fonseca et al., "FSD50K",
IEEE/ACM TASLP 2022; Turian et al., "HEAR: Holistic Evaluation of Audio Representations",
NeurIPS 2021 competition track (d′ = √2 Φ⁻¹(AUC)).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from scipy.special import expit

from probekit import __version__, graph, pairwise
from probekit.data import check_embeddings, check_same_dimensions
from probekit.errors import InputError
from probekit.geometry import NEIGHBOURHOOD_K, diagnose
from probekit.knn import reading_k, resolve_k
from probekit.linear import DEFAULT_C_GRID, DEFAULT_MAX_ITER, DEFAULT_TOL, lbfgs, standardize
from probekit.neighbors import check_metric, check_representable, prepare_vectors, search
from probekit.report import Report
from probekit.tagging import (
    mean_average_precision,
    paired_map_difference,
    tagging_scores,
    tags_without_positives,
    tune_thresholds,
)

DEFAULT_TEMPERATURE = 0.07


def check_tags(Y, *, name: str = "labels") -> np.ndarray:
    """An (N, C) 0/1 tag matrix as bool; one-line errors otherwise."""
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[1] < 1:
        raise InputError(f"multi-label {name} must be an N x C 0/1 matrix, got shape {Y.shape}")
    if Y.dtype != bool:
        if not np.issubdtype(Y.dtype, np.number):
            raise InputError(f"multi-label {name} must be numeric 0/1, got dtype {Y.dtype}")
        if not np.isin(Y, (0, 1)).all():
            raise InputError(f"multi-label {name} must hold only 0 and 1")
    return Y.astype(bool)


def knn_tag_scores(neighbor_indices: np.ndarray, neighbor_similarities: np.ndarray,
                   train_tags: np.ndarray, k: tuple[int, ...],
                   temperature: float = DEFAULT_TEMPERATURE) -> dict[int, np.ndarray]:
    """Tag scores of every query for every k: ``{k: (n, C) float32}``.

    ``s_c(k) = Σ_{j≤k} w_j y_{n_j c} / Σ_{j≤k} w_j`` with ``w_j = exp((s_j − s_1) / T)``
    (``s_1`` the nearest similarity, so ``w_1 = 1`` and nothing overflows); one pass over the
    neighbours accumulates every k.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be a positive number, got {temperature}")
    weights = np.exp((neighbor_similarities.astype(np.float64)
                      - neighbor_similarities[:, :1]) / temperature)
    tags = train_tags.astype(np.float32)
    wanted = set(k)
    out = {}
    total = np.zeros((len(neighbor_indices), tags.shape[1]), dtype=np.float64)
    weight_sum = np.zeros(len(neighbor_indices))
    for j in range(max(k)):
        total += weights[:, j, None] * tags[neighbor_indices[:, j]]
        weight_sum += weights[:, j]
        if j + 1 in wanted:
            out[j + 1] = (total / weight_sum[:, None]).astype(np.float32)
    return out


def fit_ovr_logistic(X: np.ndarray, Y: np.ndarray, *, C: float, init: np.ndarray | None = None,
                     max_iter: int = DEFAULT_MAX_ITER,
                     tol: float = DEFAULT_TOL) -> tuple[np.ndarray, int, bool]:
    """One-vs-rest L2 logistic regression for every tag at once.

    Minimises ``(1/n) Σ_c Σ_i ℓ(y_ic, x_i·w_c + b_c) + (1/(2Cn)) Σ_c ‖w_c‖²`` (scikit-learn's
    per-tag objective divided by ``C n``; intercepts unpenalised) by L-BFGS. Returns the
    ``(D + 1, C)`` parameters (last row: intercepts), the iterations and convergence.
    """
    if C <= 0:
        raise InputError(f"C must be positive, got {C}")
    n, dim = X.shape
    targets = Y.astype(np.float32)
    penalty = 1.0 / (C * n)
    n_tags = Y.shape[1]

    def loss_and_gradient(params):
        coef = params[: dim * n_tags].reshape(dim, n_tags)
        intercept = params[dim * n_tags:]
        logits = X @ coef.astype(np.float32) + intercept.astype(np.float32)
        # ℓ = log(1 + e^z) − y z, computed stably; its derivative is σ(z) − y
        loss = (np.logaddexp(0.0, logits, dtype=np.float64).sum()
                - np.sum(targets * logits, dtype=np.float64)) / n
        loss += 0.5 * penalty * np.sum(coef**2)
        residual = (expit(logits) - targets) / np.float32(n)
        grad_coef = (X.T @ residual).astype(np.float64) + penalty * coef
        return loss, np.concatenate([grad_coef.ravel(), residual.sum(axis=0, dtype=np.float64)])

    start = np.zeros(dim * n_tags + n_tags) if init is None else _flatten(init)
    solution, n_iter, converged = lbfgs(loss_and_gradient, start, max_iter=max_iter, tol=tol)
    params = np.vstack([solution[: dim * n_tags].reshape(dim, n_tags),
                        solution[dim * n_tags:][None, :]])
    return params, n_iter, converged


def ovr_probabilities(X: np.ndarray, params: np.ndarray) -> np.ndarray:
    """σ(X W + b) as float32."""
    logits = X @ params[:-1].astype(np.float32) + params[-1].astype(np.float32)
    return expit(logits).astype(np.float32)


def _flatten(params: np.ndarray) -> np.ndarray:
    return np.concatenate([params[:-1].ravel(), params[-1]])


def linear_tag_probe(X, Y, X_test, *, C=DEFAULT_C_GRID, val_rows, fit_rows, train_rows=None,
                     test_rows=None, max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL) -> dict:
    """The C sweep on the validation split (chosen by validation mAP; ties: lower validation
    log-loss), thresholds tuned on the validation scores at that C, and the refit on all of
    train. Returns test ``scores``, ``thresholds`` and the protocol details."""
    grid = sorted(float(c) for c in C)
    rows = np.arange(X.shape[0]) if train_rows is None else train_rows
    fit_std, val_std = standardize(X, X, train_rows=rows[fit_rows], test_rows=rows[val_rows])
    fit_tags, val_tags = Y[fit_rows], Y[val_rows]
    params = None
    val_maps, val_losses, n_iters, converged, fits = [], [], [], [], []
    for value in grid:
        params, iterations, done = fit_ovr_logistic(fit_std, fit_tags, C=value, init=params,
                                                    max_iter=max_iter, tol=tol)
        probabilities = ovr_probabilities(val_std, params)
        val_maps.append(_map_or_zero(val_tags, probabilities))
        clipped = np.clip(probabilities.astype(np.float64), 1e-12, 1 - 1e-12)
        val_losses.append(float(-np.mean(val_tags * np.log(clipped)
                                         + (~val_tags) * np.log1p(-clipped))))
        n_iters.append(iterations)
        converged.append(done)
        fits.append((params, probabilities))
    best = min(range(len(grid)), key=lambda i: (-val_maps[i], val_losses[i]))
    thresholds = tune_thresholds(val_tags, fits[best][1])
    train_std, test_std = standardize(X, X_test, train_rows=rows, test_rows=test_rows)
    refit, refit_iter, refit_done = fit_ovr_logistic(train_std, Y, C=grid[best],
                                                     init=fits[best][0], max_iter=max_iter,
                                                     tol=tol)
    notes = []
    if not all(converged) or not refit_done:
        notes.append(f"the linear probe's L-BFGS stopped at max_iter={max_iter} for some C "
                     "before the tolerance was met")
    return {"scores": ovr_probabilities(test_std, refit), "thresholds": thresholds,
            "C": grid[best], "C_grid": grid, "val_map": val_maps, "val_loss": val_losses,
            "n_val": int(len(val_rows)), "n_iter": n_iters, "converged": converged,
            "refit_n_iter": refit_iter, "refit_converged": refit_done, "notes": notes}


def neighbour_jaccard(X, tags: np.ndarray, *, k: int = NEIGHBOURHOOD_K, metric: str = "cosine",
                      sample_size: int = 5000, seed: int = 0, backend: str = "auto") -> float:
    """Multi-label neighbourhood agreement: the mean Jaccard similarity between a row's tag set
    and those of its ``k`` nearest other rows (leave-one-out), over a seeded sample of at most
    ``sample_size`` query rows: :func:`probekit.graph.neighbour_jaccard` after its own search
    (:func:`probekit.dual_probe` takes it from the geometry's graph instead)."""
    vectors = prepare_vectors(X, metric=metric)
    k = min(k, len(vectors) - 1)
    queries = pairwise.sample_rows(len(vectors), sample_size, seed)
    found = search(vectors, vectors, k, metric=metric, exclude_self=True, backend=backend) \
        if len(queries) == len(vectors) else _sampled_search(vectors, queries, k, metric,
                                                             backend)
    return graph.neighbour_jaccard(found.indices, tags[queries], tags)


def _sampled_search(vectors, queries, k, metric, backend):
    """The k nearest other rows of the sampled ``queries`` (one extra neighbour, then each
    query's own row removed by index)."""
    found = search(vectors[queries], vectors, k + 1, metric=metric, backend=backend)
    keep = found.indices != queries[:, None]
    first = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(queries))[:, None]
    return type(found)(found.similarities[rows, first], found.indices[rows, first],
                       found.backend)


def _finite(section):
    """NaN and ±inf (a d' of an AUC of 1) become None, so the report stays valid JSON."""
    if isinstance(section, dict):
        return {key: _finite(value) for key, value in section.items()}
    if isinstance(section, list):
        return [_finite(value) for value in section]
    if isinstance(section, float) and not np.isfinite(section):
        return None
    return section


def _map_or_zero(tags: np.ndarray, scores: np.ndarray) -> float:
    if not tags.any():
        return 0.0
    return float(mean_average_precision(tags, scores))


def multilabel_probe(X, Y, *, X_test=None, Y_test=None, tags=None, k=(1, 5, 10, 20, 50, 100),
                     metric="cosine", temperature=DEFAULT_TEMPERATURE, C=DEFAULT_C_GRID,
                     val_size=0.1, test_size=0.2, seed=0, backend="auto", n_bootstrap=1000,
                     max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL, geometry=True,
                     geometry_sample=5000, progress=None) -> Report:
    """The multi-label dual probe (see the module docstring); what :func:`probekit.dual_probe`
    runs when the labels are an (N, C) matrix. Splits: a given test set, or a seeded random
    holdout of ``test_size``. ``geometry`` adds the label-free diagnostics of the training rows
    and :func:`neighbour_jaccard`."""
    started = time.perf_counter()
    X = check_embeddings(X)
    Y = check_tags(Y)
    check_metric(metric)
    if len(Y) != X.shape[0]:
        raise InputError(f"embeddings have {X.shape[0]} rows but labels have {len(Y)}")
    tags = [str(t) for t in (tags if tags is not None else range(Y.shape[1]))]
    if len(tags) != Y.shape[1]:
        raise InputError(f"{len(tags)} tag names for {Y.shape[1]} tag columns")
    if (X_test is None) != (Y_test is None):
        raise InputError("pass both X_test and y_test, or neither")
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    if X_test is not None:
        X_test = check_embeddings(X_test, name="test embeddings")
        Y_test = check_tags(Y_test, name="test labels")
        check_same_dimensions(X, X_test)
        if len(Y_test) != X_test.shape[0]:
            raise InputError(f"test embeddings have {X_test.shape[0]} rows but test labels "
                             f"have {len(Y_test)}")
        if Y_test.shape[1] != Y.shape[1]:
            raise InputError(f"training labels have {Y.shape[1]} tags, test labels "
                             f"{Y_test.shape[1]}")
        train_rows, test_rows, test_source = None, None, X_test
        train_tags, test_tags = Y, Y_test
        protocol = {"split": "given", "seed": seed}
    else:
        if not 0 < test_size < 1:
            raise InputError(f"test_size must be in (0, 1), got {test_size}")
        order = rng.permutation(X.shape[0])
        n_test = max(1, int(round(test_size * X.shape[0])))
        test_rows, train_rows = np.sort(order[:n_test]), np.sort(order[n_test:])
        test_source, train_tags, test_tags = X, Y[train_rows], Y[test_rows]
        protocol = {"split": "holdout", "stratified": False, "test_size": test_size,
                    "seed": seed}
    n_train = X.shape[0] if train_rows is None else len(train_rows)
    if n_train < 4:
        raise InputError(f"the training set has {n_train} rows; the probes need at least 4")
    check_representable(X, metric=metric, name="embeddings")
    if X_test is not None:
        check_representable(X_test, metric=metric, name="test embeddings")
    learnable = train_tags.any(axis=0)
    if not learnable.all():
        dropped = [tags[i] for i in np.flatnonzero(~learnable)]
        notes.append(f"{len(dropped)} tag(s) never occur in training and are left out: "
                     f"{', '.join(dropped[:10])}" + (" ..." if len(dropped) > 10 else ""))
    kept = np.flatnonzero(learnable)
    if len(kept) == 0:
        raise InputError("no tag occurs in the training labels")
    train_tags, test_tags = train_tags[:, kept], test_tags[:, kept]
    kept_names = [tags[i] for i in kept]
    absent = tags_without_positives(test_tags)
    if len(absent):
        names = [kept_names[i] for i in absent]
        notes.append(f"{len(absent)} tag(s) have no positive in the test set and are not "
                     f"averaged: {', '.join(names[:10])}" + (" ..." if len(names) > 10 else ""))
    if not test_tags.any():
        raise InputError("no tag has a positive in the test set: nothing to score")

    # the validation split of train: C of the linear probe, F1 thresholds of both probes
    n_val = max(1, int(round(val_size * n_train)))
    shuffled = np.random.default_rng([seed, 1]).permutation(n_train)
    val_rows, fit_rows = np.sort(shuffled[:n_val]), np.sort(shuffled[n_val:])

    ks, k_notes = resolve_k(k, len(fit_rows))
    notes += k_notes
    tick = time.perf_counter()
    train_vectors = prepare_vectors(X, train_rows, metric=metric)
    test_vectors = prepare_vectors(test_source, test_rows, metric=metric)
    found = search(test_vectors, train_vectors, max(ks), metric=metric, backend=backend,
                   progress=None if progress is None else
                   (lambda done, total: progress("kNN search", done, total)))
    knn_scores = knn_tag_scores(found.indices, found.similarities, train_tags, ks, temperature)
    validation = search(train_vectors[val_rows], train_vectors[fit_rows], max(ks),
                        metric=metric, backend=backend)
    val_scores = knn_tag_scores(validation.indices, validation.similarities,
                                train_tags[fit_rows], ks, temperature)
    del train_vectors, test_vectors
    knn_time = time.perf_counter() - tick
    tick = time.perf_counter()
    linear = linear_tag_probe(X, train_tags, test_source, C=C, val_rows=val_rows,
                              fit_rows=fit_rows, train_rows=train_rows, test_rows=test_rows,
                              max_iter=max_iter, tol=tol)
    linear_time = time.perf_counter() - tick
    notes += linear.pop("notes")

    tick = time.perf_counter()
    knn = {"weighted": {}}
    for value in ks:
        thresholds = tune_thresholds(train_tags[val_rows], val_scores[value])
        knn["weighted"][str(value)] = tagging_scores(
            test_tags, knn_scores[value], thresholds=thresholds, n_bootstrap=n_bootstrap,
            seed=seed).to_dict()
    best_k = max(ks, key=lambda value: (knn["weighted"][str(value)]["map"], -value))
    knn["best"] = {"vote": "weighted", "k": best_k, "map": knn["weighted"][str(best_k)]["map"]}
    knn["backend"] = found.backend
    linear_test_scores = linear.pop("scores")
    linear_scores = tagging_scores(test_tags, linear_test_scores,
                                   thresholds=linear.pop("thresholds"),
                                   n_bootstrap=n_bootstrap, seed=seed).to_dict()
    fixed_k = reading_k(ks)
    paired = paired_map_difference(test_tags, linear_test_scores, knn_scores[fixed_k],
                                   n_resamples=n_bootstrap, seed=seed)
    comparison = {"vote": "weighted", "k": fixed_k, "n_paired": paired["n_paired"],
                  "linear": paired["a"], "knn": paired["b"], "difference": paired["difference"],
                  "difference_ci95": paired["difference_ci95"], "p_value": paired["p_value"],
                  "test": paired["test"]}
    bootstrap_time = time.perf_counter() - tick

    protocol.update({
        "task": "multilabel", "metric": metric, "k": list(ks), "votes": ["weighted"],
        "temperature": temperature,
        "knn_score": "similarity-weighted fraction of the k neighbours carrying the tag",
        "knn_preprocess": "l2" if metric == "cosine" else "none",
        "linear_preprocess": "standardize (train mean and std)",
        "C_grid": linear["C_grid"], "val_size": val_size,
        "C_selection": "best validation mAP on a seeded random split of train (ties: lower "
                       "validation log-loss); refit on all of train",
        "solver": "one-vs-rest logistic regression, L-BFGS (probekit's own, float32 products)",
        "thresholds": "per tag, tuned for F1 on the validation split (kNN: validation rows "
                      "against the rest of train)",
        "max_iter": max_iter, "tol": tol,
        "bootstrap": {"resamples": n_bootstrap, "level": 0.95, "seed": seed},
        "backend": {"knn": found.backend, "linear": "numpy"},
    })
    test_counts = test_tags.sum(axis=0)
    info = {
        "task": "multilabel", "n_samples": int(X.shape[0]), "n_train": int(n_train),
        "n_test": int(len(test_tags)), "n_knn_test": int(len(test_tags)),
        "dim": int(X.shape[1]), "dtype": str(X.dtype), "n_tags": len(kept),
        "tags": kept_names, "train_tag_counts": train_tags.sum(axis=0).tolist(),
        "test_tag_counts": test_counts.tolist(),
        "mean_tags_per_sample": float(train_tags.sum(axis=1).mean()),
        "test_labels_sha256": hashlib.sha256(
            np.packbits(test_tags, axis=1).tobytes() + repr(kept_names).encode()).hexdigest(),
    }
    protocol["d_prime"] = ("d_prime: mean over tags of sqrt(2) * Phi^-1(AUC_tag), as HEAR's "
                           "DPrime (null when a tag's AUC is 1: d' is infinite); "
                           "d_prime_macro_auc: of the macro AUC (AudioSet / PANNs)")
    geometry_values = {}
    if geometry:
        tick = time.perf_counter()
        rows_X = X if train_rows is None else X[train_rows]
        geometry_values = diagnose(rows_X, None, metric=metric, sample_size=geometry_sample,
                                   seed=seed, backend=backend, tags=train_tags).to_dict()
        geometry_time = time.perf_counter() - tick
    else:
        geometry_time = 0.0
    return Report(
        probekit_version=__version__, input=info, protocol=protocol, knn=_finite(knn),
        linear=_finite({**linear_scores, **linear}), linear_vs_knn=_finite(comparison),
        warnings=tuple(notes),
        geometry=geometry_values,
        timings={"knn_s": round(knn_time, 4), "linear_s": round(linear_time, 4),
                 "geometry_s": round(geometry_time, 4),
                 "bootstrap_s": round(bootstrap_time, 4),
                 "total_s": round(time.perf_counter() - started, 4)},
    )
