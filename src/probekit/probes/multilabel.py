"""The probes of multi-label (tagging) data: AudioSet / FSD50K style.

Labels are an (N, C) 0/1 matrix of tags. The two probes:

- **kNN**: the score of tag c for a query is the similarity-weighted fraction of its k nearest
  training rows that carry c, ``s_c = Σ_j w_j y_jc / Σ_j w_j`` with ``w_j = exp((s_j − s_1)/T)``
  (the weights of the single-label weighted vote); every k from one search.
- **linear**: one-vs-rest logistic regression on standardised features, one L2-penalised
  binary problem per tag (scikit-learn's objective per tag, solved jointly: the problems are
  independent, so the joint minimiser is every tag's own: AudioSet's 527 tags are one
  ``D × 527`` weight matrix and one L-BFGS run, not 527 fits); C is swept on a seeded
  validation split of train and chosen by validation mAP, then refitted on all of train. The
  objective runs on the backends and in the memory of the single-label probe
  (:mod:`probekit.probes.logistic`, :mod:`probekit.probes.standard`).

Both are scored by :mod:`probekit.probes.tagging`: mAP with a bootstrap CI, ROC-AUC and d′,
micro and macro F1 at 0.5 and at per-tag thresholds tuned for F1 on the validation split.
:func:`probekit.dual_probe` runs them (tags that never occur in training cannot be learned and
are left out with a warning; tags without a positive in the test set are named and not
averaged).

References: Gemmeke et al., "Audio Set", ICASSP 2017 (mAP, d′); Fonseca et al., "FSD50K",
IEEE/ACM TASLP 2022; Turian et al., "HEAR: Holistic Evaluation of Audio Representations",
NeurIPS 2021 competition track (d′ = √2 Φ⁻¹(AUC)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from probekit.errors import InputError
from probekit.probes.knn import DEFAULT_TEMPERATURE
from probekit.probes.lbfgs import DEFAULT_MAX_ITER, DEFAULT_TOL
from probekit.probes.linear import DEFAULT_C_GRID, Sweep, check_grid, sweep_C
from probekit.probes.logistic import (
    decision_blocks,
    minimise,
    objective_sums,
    resolve_linear_backend,
)
from probekit.probes.standard import (
    DEFAULT_MEMORY_BUDGET,
    StandardRows,
    alike,
    check_memory_budget,
    check_rows,
    fit_scaling,
    standard_rows,
)
from probekit.probes.tagging import mean_average_precision, tune_thresholds
from probekit.ranks import SINGLE, Ranks


def knn_tag_scores(neighbour_indices: np.ndarray, neighbour_similarities: np.ndarray,
                   train_tags: np.ndarray, k: tuple[int, ...],
                   temperature: float = DEFAULT_TEMPERATURE) -> dict[int, np.ndarray]:
    """Tag scores of every query for every k: ``{k: (n, C) float32}``.

    ``s_c(k) = Σ_{j≤k} w_j y_{n_j c} / Σ_{j≤k} w_j`` with ``w_j = exp((s_j − s_1) / T)``
    (``s_1`` the nearest similarity, so ``w_1 = 1`` and nothing overflows); one pass over the
    neighbours accumulates every k.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be a positive number, got {temperature}")
    weights = np.exp((neighbour_similarities.astype(np.float64)
                      - neighbour_similarities[:, :1]) / temperature)
    tags = train_tags.astype(np.float32)
    wanted = set(k)
    out = {}
    total = np.zeros((len(neighbour_indices), tags.shape[1]), dtype=np.float64)
    weight_sum = np.zeros(len(neighbour_indices))
    for j in range(max(k)):
        total += weights[:, j, None] * tags[neighbour_indices[:, j]]
        weight_sum += weights[:, j]
        if j + 1 in wanted:
            out[j + 1] = (total / weight_sum[:, None]).astype(np.float32)
    return out


def fit_ovr_logistic(X: np.ndarray, Y: np.ndarray, *, C: float, init: np.ndarray | None = None,
                     max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL,
                     backend: str = "numpy") -> tuple[np.ndarray, int, bool]:
    """One-vs-rest L2 logistic regression for every tag at once.

    Minimises ``(1/n) Σ_c Σ_i ℓ(y_ic, x_i·w_c + b_c) + (1/(2Cn)) Σ_c ‖w_c‖²`` (scikit-learn's
    per-tag objective divided by ``C n``; intercepts unpenalised) by L-BFGS, on standardised
    features ``X`` (used as float32), with ``backend`` ``"numpy"``, ``"torch"`` or ``"auto"``.
    Returns the ``(D + 1, C)`` parameters (last row: intercepts), the iterations and
    convergence.
    """
    name, device = resolve_linear_backend(backend)
    X = np.asarray(X, dtype=np.float32)
    sums, _ = objective_sums(StandardRows(X), np.asarray(Y), kind="sigmoid", outputs=Y.shape[1],
                             backend=name, device=device)
    return fit_ovr(sums, n=X.shape[0], dim=X.shape[1], n_tags=Y.shape[1], C=C, init=init,
                   max_iter=max_iter, tol=tol)


def fit_ovr(sums, *, n: int, dim: int, n_tags: int, C: float, init: np.ndarray | None = None,
            max_iter: int = DEFAULT_MAX_ITER,
            tol: float = DEFAULT_TOL) -> tuple[np.ndarray, int, bool]:
    """:func:`fit_ovr_logistic` on the block sums of
    :func:`probekit.probes.logistic.objective_sums` (``kind="sigmoid"``) over ``n`` rows."""
    if C <= 0:
        raise InputError(f"C must be positive, got {C}")
    coef, intercept, n_iter, converged = minimise(
        sums, n=n, dim=dim, outputs=n_tags, penalty=1.0 / (C * n),
        init=None if init is None else _flatten(init), max_iter=max_iter, tol=tol)
    return np.vstack([coef, intercept[None, :]]), n_iter, converged


def ovr_probabilities(X: np.ndarray, params: np.ndarray) -> np.ndarray:
    """σ(X W + b) as float32."""
    logits = X @ params[:-1].astype(np.float32) + params[-1].astype(np.float32)
    return expit(logits).astype(np.float32)


def row_probabilities(rows: StandardRows, params: np.ndarray) -> np.ndarray:
    """σ(X W + b) of standardised rows as float32 ``(n, C)``, block by block."""
    out = np.empty((rows.shape[0], params.shape[1]), dtype=np.float32)
    for start, stop, scores in decision_blocks(rows, params[:-1], params[-1]):
        out[start:stop] = expit(scores)
    return out


def _flatten(params: np.ndarray) -> np.ndarray:
    return np.concatenate([params[:-1].ravel(), params[-1]])


@dataclass(frozen=True)
class TagLinear:
    """What the linear tag probe found: test ``scores`` (probabilities), per-tag F1
    ``thresholds`` tuned on the validation split, the C sweep and the refit."""

    scores: np.ndarray
    thresholds: np.ndarray
    sweep: Sweep
    n_val: int
    refit_n_iter: int
    refit_converged: bool
    notes: tuple[str, ...]
    backend: tuple[str, str, str] = ("numpy", "cpu", "copy")

    @property
    def sweep_grid(self) -> tuple[float, ...]:
        return self.sweep.C_grid

    def protocol_dict(self) -> dict:
        sweep = self.sweep
        return {"C": sweep.C, "C_grid": list(sweep.C_grid), "val_map": list(sweep.scores),
                "val_loss": list(sweep.losses), "n_val": self.n_val,
                "n_iter": list(sweep.n_iter), "converged": list(sweep.converged),
                "refit_n_iter": self.refit_n_iter, "refit_converged": self.refit_converged,
                "backend": dict(zip(("name", "device", "rows"), self.backend, strict=True))}


def linear_tag_probe(X, Y, X_test, *, C=DEFAULT_C_GRID, val_rows, fit_rows, train_rows=None,
                     test_rows=None, max_iter=DEFAULT_MAX_ITER, tol=DEFAULT_TOL,
                     linear_backend: str = "numpy",
                     memory_budget: int = DEFAULT_MEMORY_BUDGET,
                     ranks: Ranks = SINGLE) -> TagLinear:
    """The C sweep on the validation split (:func:`probekit.probes.linear.sweep_C`: chosen by
    validation mAP; ties: lower validation log-loss), thresholds tuned on the validation scores
    at that C, and the refit on all of train.

    ``linear_backend`` (``"numpy"``, ``"torch"``, ``"auto"``) evaluates the objective;
    ``memory_budget`` (bytes) bounds the standardised copy of the training rows, streamed from
    ``X`` when it would not fit (:func:`probekit.probes.linear.linear_predict`); ``ranks``
    shards the work over the training rows among the processes of a torch.distributed run as
    there, every rank returning exactly what one process returns."""
    grid = check_grid(C)
    budget = check_memory_budget(memory_budget)
    name, device = resolve_linear_backend(linear_backend)
    engine = {"backend": name, "device": device, "memory_budget": budget, "ranks": ranks}
    rows = np.arange(X.shape[0]) if train_rows is None else np.asarray(train_rows)
    fit_scale = fit_scaling(X, rows[fit_rows], ranks=ranks)
    check_rows(X, rows[val_rows], fit_scale, which="validation", ranks=ranks)
    scale = fit_scaling(X, train_rows, ranks=ranks)
    check_rows(X_test, test_rows, scale, ranks=ranks)
    val_tags = Y[val_rows]
    sweep = _sweep_ovr(standard_rows(X, rows[fit_rows], fit_scale), Y[fit_rows],
                       standard_rows(X, rows[val_rows], fit_scale), val_tags, grid=grid,
                       max_iter=max_iter, tol=tol, engine=engine)
    best = sweep.fits[sweep.best]
    thresholds = alike(ranks, lambda: tune_thresholds(  # the validation rows: on every rank
        val_tags, row_probabilities(standard_rows(X, rows[val_rows], fit_scale), best)))
    train = standard_rows(X, train_rows, scale)
    sums, placement = objective_sums(train, np.asarray(Y), kind="sigmoid", outputs=Y.shape[1],
                                     **engine)
    refit, refit_iter, refit_done = fit_ovr(sums, n=train.shape[0], dim=train.shape[1],
                                            n_tags=Y.shape[1], C=sweep.C, init=best,
                                            max_iter=max_iter, tol=tol)
    del sums  # the training copy
    notes = sweep.notes(max_iter)
    if not refit_done:
        notes.append(f"linear probe: the refit at C={sweep.C:g} did not converge in "
                     f"{max_iter} iterations (raise max_iter)")
    scores = alike(ranks, lambda: row_probabilities(standard_rows(X_test, test_rows, scale),
                                                    refit))  # the test rows: on every rank
    return TagLinear(scores, thresholds, sweep, int(len(val_rows)), refit_iter, refit_done,
                     tuple(notes), (name, device, placement))


def _sweep_ovr(fit_part: StandardRows, fit_tags, val_part: StandardRows, val_tags, *, grid,
               max_iter, tol, engine) -> Sweep:
    """:func:`sweep_C` of the one-vs-rest fit: the fit part is placed once for every C (and
    released on return)."""
    sums, _ = objective_sums(fit_part, np.asarray(fit_tags), kind="sigmoid",
                             outputs=fit_tags.shape[1], **engine)
    n, dim = fit_part.shape

    def fit(value, init):
        return fit_ovr(sums, n=n, dim=dim, n_tags=fit_tags.shape[1], C=value, init=init,
                       max_iter=max_iter, tol=tol)

    def score(params):  # validation mAP, then log-loss on ties
        probabilities = row_probabilities(val_part, params)
        clipped = np.clip(probabilities.astype(np.float64), 1e-12, 1 - 1e-12)
        return (_map_or_zero(val_tags, probabilities),
                -np.mean(val_tags * np.log(clipped) + (~val_tags) * np.log1p(-clipped)))

    def evaluate(params):  # the validation rows: on every rank
        return alike(engine["ranks"], lambda: score(params))

    return sweep_C(grid, fit, evaluate)


def _map_or_zero(tags: np.ndarray, scores: np.ndarray) -> float:
    if not tags.any():
        return 0.0
    return float(mean_average_precision(tags, scores))
