"""The linear probe: how linearly separable are the classes, globally?

Features are standardised with training statistics; a multinomial logistic regression is fitted
for every C of a log grid on a stratified validation split carved from the training data (warm
started from the previous C), the C with the best validation accuracy is kept (ties: lower
validation cross-entropy), and the model is refitted on all of the training data. The test set
is touched once, at the end.

The objective is scikit-learn's for ``LogisticRegression(C=C)`` (L-BFGS, multinomial, intercept
not penalised), so at equal C both find the same minimiser::

    min_{W, b}  (1/n) sum_i [ logsumexp(x_i W + b) - (x_i W + b)_{y_i} ]  +  ||W||_F^2 / (2 C n)

With two classes scikit-learn fits one weight vector w (the binary logistic loss with
``||w||² / (2 C n)``), not two. The softmax over two classes depends only on ``w = w_1 − w_0``,
and at the optimum ``w_1 = −w_0 = w/2``, so its penalty ``||W||_F² = ||w||²/2`` is half of
scikit-learn's at the same C: for two classes the penalty is doubled, which makes the two
problems the same (probekit at C equals scikit-learn at C, not at 2C).

Matrix products run in float32 (the data never get a float64 copy); the logits, the softmax and
its residual are float32 with every sum accumulated in float64; parameters and the loss are
float64. References: scikit-learn ``LogisticRegression``; the linear-probe
protocol of Radford et al. 2021 (CLIP) and Oquab et al. 2023 (DINOv2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from probekit.arrays import float32_limit, row_blocks
from probekit.errors import InputError
from probekit.labels import encode_labels
from probekit.probes.lbfgs import DEFAULT_MAX_ITER, DEFAULT_TOL, lbfgs
from probekit.probes.metrics import ClassificationScores, bootstrap_ci, classification_scores
from probekit.splits import stratified_holdout
from probekit.validate import check_dataset, check_same_dimensions

DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 9))
DEFAULT_VAL_SIZE = 0.1


@dataclass(frozen=True)
class LogisticFit:
    """A fitted multinomial logistic regression: ``scores = X @ coef + intercept``."""

    coef: np.ndarray  # (D, K) float64
    intercept: np.ndarray  # (K,) float64
    n_iter: int
    converged: bool

    def decision_scores(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef.astype(np.float32) + self.intercept.astype(np.float32)


def standardize(
    train: np.ndarray,
    test: np.ndarray,
    *,
    train_rows: np.ndarray | None = None,
    test_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 copies of ``train[train_rows]`` and ``test[test_rows]`` centred and scaled by the
    training mean and standard deviation (features with zero variance are only centred, as in
    scikit-learn's ``StandardScaler``).

    Reads the inputs chunk by chunk (they may be memory maps of any float dtype); statistics are
    accumulated in float64 with two passes, so no large float64 copy is ever made. A row lying
    more than :func:`probekit.arrays.float32_limit` standard deviations from the training
    mean in some feature cannot be held by the float32 probe: :class:`InputError` names how
    many (an outlier of that size would otherwise turn into inf and a meaningless prediction).
    """
    n_train = train.shape[0] if train_rows is None else len(train_rows)
    total = np.zeros(train.shape[1])
    for _, _, block in row_blocks(train, train_rows):
        total += block.sum(axis=0, dtype=np.float64)
    mean = total / n_train
    squares = np.zeros(train.shape[1])
    for _, _, block in row_blocks(train, train_rows):
        squares += ((block - mean) ** 2).sum(axis=0)
    scale = np.sqrt(squares / n_train)
    scale[scale == 0] = 1.0
    limit = float32_limit(train.shape[1])
    out = []
    for array, rows, which in ((train, train_rows, "training"), (test, test_rows, "test")):
        result = np.empty((array.shape[0] if rows is None else len(rows), array.shape[1]),
                          dtype=np.float32)
        outliers = 0
        for start, stop, block in row_blocks(array, rows):
            standardized = (block - mean) / scale
            far = (np.abs(standardized) > limit).any(axis=1)
            outliers += int(np.count_nonzero(far))
            result[start:stop] = np.where(far[:, None], 0.0, standardized)
        if outliers:
            raise InputError(
                f"{outliers} {which} rows lie more than {limit:.3g} training standard "
                "deviations from the training mean in some feature, beyond what the float32 "
                "linear probe can hold: remove these outliers or rescale the features")
        out.append(result)
    return out[0], out[1]


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    C: float,
    init: LogisticFit | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
) -> LogisticFit:
    """Multinomial logistic regression by L-BFGS (see the module docstring for the objective).

    Parameters
    ----------
    X : (n, D) float32 features; y : (n,) codes in ``0..n_classes-1``.
    C : inverse regularisation strength, as in scikit-learn.
    init : warm start.
    max_iter, tol : L-BFGS iteration limit and gradient tolerance (scikit-learn's defaults are
        100 and 1e-4).
    """
    if C <= 0:
        raise InputError(f"C must be positive, got {C}")
    n, dim = X.shape
    rows = np.arange(n)
    # two classes: doubled, so that the softmax matches scikit-learn's binary problem at this C
    penalty = (2.0 if n_classes == 2 else 1.0) / (C * n)

    def loss_and_gradient(params: np.ndarray) -> tuple[float, np.ndarray]:
        coef = params[: dim * n_classes].reshape(dim, n_classes)
        intercept = params[dim * n_classes:]
        # float32 logits, shifted by their row maximum: the softmax and its residual stay in
        # float32, the per-sample losses and every sum are accumulated in float64
        logits = X @ coef.astype(np.float32)
        logits += intercept.astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        true_logit = logits[rows, y].astype(np.float64)
        np.exp(logits, out=logits)
        total = logits.sum(axis=1, dtype=np.float64)
        loss = np.mean(np.log(total) - true_logit) + 0.5 * penalty * np.sum(coef**2)
        logits /= total[:, None].astype(np.float32)  # probabilities P
        logits[rows, y] -= 1.0  # the residual P - Y, in place
        logits *= np.float32(1.0 / n)
        grad_coef = (X.T @ logits).astype(np.float64) + penalty * coef
        return loss, np.concatenate([grad_coef.ravel(), logits.sum(axis=0, dtype=np.float64)])

    if init is None:
        start = np.zeros(dim * n_classes + n_classes)
    else:
        start = np.concatenate([init.coef.ravel(), init.intercept])
    solution, n_iter, converged = lbfgs(loss_and_gradient, start, max_iter=max_iter, tol=tol)
    coef = solution[: dim * n_classes].reshape(dim, n_classes)
    return LogisticFit(coef, solution[dim * n_classes:].copy(), n_iter, converged)


def _softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise softmax of float64 logits and the log normaliser ``logsumexp`` of each row."""
    top = logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits - top)
    total = probabilities.sum(axis=1, keepdims=True)
    probabilities /= total
    return probabilities, np.log(total[:, 0]) + top[:, 0]


@dataclass(frozen=True)
class LinearPredictions:
    """What the linear probe predicted and how it chose C.

    Attributes
    ----------
    predictions : (n_test,) predicted codes.
    true_rank : (n_test,) rank of the true class among the scores (``inf`` for classes never
        seen in training); ``None`` without true labels.
    C : the chosen C; C_grid : the grid swept.
    val_accuracy, val_loss : per C, on the validation split (empty when the grid has one C).
    n_iter, converged : L-BFGS iterations and convergence per C of the sweep.
    refit_n_iter, refit_converged : the same for the final fit on all training data.
    n_val : size of the validation split.
    """

    predictions: np.ndarray
    true_rank: np.ndarray | None
    C: float
    C_grid: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    val_loss: tuple[float, ...]
    n_iter: tuple[int, ...]
    converged: tuple[bool, ...]
    refit_n_iter: int
    refit_converged: bool
    n_val: int
    warnings: tuple[str, ...] = field(default=())

    def protocol_dict(self) -> dict:
        return {
            "C": self.C,
            "C_grid": list(self.C_grid),
            "val_accuracy": list(self.val_accuracy),
            "val_loss": list(self.val_loss),
            "n_val": self.n_val,
            "n_iter": list(self.n_iter),
            "converged": list(self.converged),
            "refit_n_iter": self.refit_n_iter,
            "refit_converged": self.refit_converged,
        }


@dataclass(frozen=True)
class Sweep:
    """The C sweep of a linear probe: one warm-started fit per C of the grid on the fit part
    of train, each scored on the validation part (``scores``: higher is better; ``losses``:
    validation loss, the tie-break), and the chosen one (``best``: highest score, then lowest
    loss)."""

    C_grid: tuple[float, ...]
    scores: tuple[float, ...]
    losses: tuple[float, ...]
    n_iter: tuple[int, ...]
    converged: tuple[bool, ...]
    fits: tuple = field(repr=False)
    best: int

    @property
    def C(self) -> float:
        return self.C_grid[self.best]

    def notes(self, max_iter: int) -> list[str]:
        """A warning naming every C whose fit stopped at ``max_iter``."""
        slow = [f"{c:g}" for c, ok in zip(self.C_grid, self.converged, strict=True) if not ok]
        if not slow:
            return []
        return [f"linear probe: L-BFGS did not converge in {max_iter} iterations for C = "
                f"{', '.join(slow)} (raise max_iter)"]


def sweep_C(grid: tuple[float, ...], fit: Callable, evaluate: Callable,
            progress: Callable[[int, int], None] | None = None) -> Sweep:
    """The C sweep shared by the single- and the multi-label linear probe.

    ``fit(C, init)`` returns ``(model, n_iter, converged)``, warm-started from the previous
    C's model (None first); ``evaluate(model)`` returns ``(score, loss)`` on the validation
    rows. The grid is swept in increasing C (each fit starts from a solution with more
    regularisation, the path the warm start follows best). ``progress(done, total)`` after each
    fit, counting one more for the refit the caller makes."""
    scores, losses, n_iter, converged, fits = [], [], [], [], []
    model = None
    for value in grid:
        model, iterations, done = fit(value, model)
        score, loss = evaluate(model)
        fits.append(model)
        scores.append(float(score))
        losses.append(float(loss))
        n_iter.append(int(iterations))
        converged.append(bool(done))
        if progress:
            progress(len(fits), len(grid) + 1)
    best = max(range(len(grid)), key=lambda i: (scores[i], -losses[i]))
    return Sweep(tuple(grid), tuple(scores), tuple(losses), tuple(n_iter), tuple(converged),
                 tuple(fits), best)


def check_grid(C: Iterable[float]) -> tuple[float, ...]:
    """The C grid, sorted; :class:`InputError` unless every value is a positive finite
    number."""
    grid = tuple(sorted(float(c) for c in C))
    if not grid or not all(np.isfinite(c) and c > 0 for c in grid):
        raise InputError(f"C values must be positive finite numbers, got {list(C)}")
    return grid


def linear_predict(
    X_train: np.ndarray,
    train_codes: np.ndarray,
    X_test: np.ndarray,
    *,
    n_classes: int,
    query_codes: np.ndarray | None = None,
    C: Iterable[float] = DEFAULT_C_GRID,
    val_size: float = DEFAULT_VAL_SIZE,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    train_rows: np.ndarray | None = None,
    test_rows: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LinearPredictions:
    """Standardise, sweep C on a validation split (:func:`sweep_C`), refit on all of train,
    predict the test set.

    The training data are ``X_train[train_rows]`` (all rows when ``None``), the test data
    ``X_test[test_rows]``; ``train_codes`` are their labels, in ``0..n_classes-1``.
    ``query_codes`` may hold larger codes (classes absent from training), which are always wrong
    and get rank ``inf``. ``progress(done, total)`` is called after each fit.
    """
    grid = check_grid(C)
    if max_iter < 1:
        raise InputError(f"max_iter must be at least 1, got {max_iter}")
    rows = np.arange(X_train.shape[0]) if train_rows is None else np.asarray(train_rows)
    notes: list[str] = []
    sweep = None
    chosen, start = grid[0], None
    fit_idx, val_idx = stratified_holdout(train_codes, test_size=val_size, seed=seed,
                                          what="validation size")
    if len(grid) > 1 and val_idx.size == 0:
        chosen = min(grid, key=lambda c: abs(np.log(c)))
        notes.append(f"too few training samples for a validation split: used C={chosen:g}")
    elif len(grid) > 1:
        # the sweep sees the fit part only, standardised with the fit part's own statistics
        fit_x, val_x = standardize(X_train, X_train, train_rows=rows[fit_idx],
                                   test_rows=rows[val_idx])
        fit_y, val_y = train_codes[fit_idx], train_codes[val_idx]

        def fit(value, init):
            model = fit_logistic(fit_x, fit_y, n_classes=n_classes, C=value, init=init,
                                 max_iter=max_iter, tol=tol)
            return model, model.n_iter, model.converged

        def evaluate(model):  # validation accuracy, then cross-entropy on ties
            logits = model.decision_scores(val_x).astype(np.float64)
            return (np.mean(logits.argmax(axis=1) == val_y),
                    np.mean(_softmax(logits)[1] - logits[np.arange(len(val_y)), val_y]))

        sweep = sweep_C(grid, fit, evaluate, progress)
        del fit_x, val_x
        chosen, start = sweep.C, sweep.fits[sweep.best]
        notes += sweep.notes(max_iter)
    train, test = standardize(X_train, X_test, train_rows=train_rows, test_rows=test_rows)
    final = fit_logistic(train, train_codes, n_classes=n_classes, C=chosen, init=start,
                         max_iter=max_iter, tol=tol)
    if not final.converged:
        notes.append(f"linear probe: the refit at C={chosen:g} did not converge in "
                     f"{max_iter} iterations (raise max_iter)")
    scores = final.decision_scores(test)
    true_rank = None
    if query_codes is not None:
        seen = query_codes < n_classes
        true_scores = scores[np.arange(len(scores)), np.where(seen, query_codes, 0)]
        ahead = (scores > true_scores[:, None]) | (  # ties: argmax takes the lower index
            (scores == true_scores[:, None]) & (np.arange(n_classes) < query_codes[:, None]))
        true_rank = ahead.sum(axis=1).astype(np.float64)
        true_rank[~seen] = np.inf
    return LinearPredictions(
        predictions=scores.argmax(axis=1).astype(np.int64), true_rank=true_rank, C=chosen,
        C_grid=grid, val_accuracy=() if sweep is None else sweep.scores,
        val_loss=() if sweep is None else sweep.losses,
        n_iter=() if sweep is None else sweep.n_iter,
        converged=() if sweep is None else sweep.converged, refit_n_iter=final.n_iter,
        refit_converged=final.converged, n_val=int(val_idx.size) if len(grid) > 1 else 0,
        warnings=tuple(notes),
    )


@dataclass(frozen=True)
class LinearResult:
    """Scores of the linear probe and how C was chosen (see :func:`linear_probe`).

    ``predictions.predictions`` holds class codes; ``classes[code]`` is the label of a code
    (codes number the classes in order of first appearance in the training labels, then those
    only in the test labels).
    """

    scores: ClassificationScores
    predictions: LinearPredictions
    classes: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    def to_dict(self) -> dict:
        return {**self.scores.to_dict(), **self.predictions.protocol_dict()}


def linear_probe(
    X_train,
    y_train,
    X_test,
    y_test,
    *,
    C: Iterable[float] = DEFAULT_C_GRID,
    val_size: float = DEFAULT_VAL_SIZE,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    n_bootstrap: int = 1000,
) -> LinearResult:
    """Linear probe of an embedding space.

    Parameters
    ----------
    X_train, y_train : (N, D) training embeddings and labels (ints or strings).
    X_test, y_test : the test split.
    C : grid of inverse regularisation strengths (default ``np.logspace(-4, 4, 9)``); with a
        single value there is no validation split and the model is fitted at that C.
    val_size : fraction of each training class held out to choose C (stratified, seeded).
    seed : seed of the validation split and of the bootstrap.
    max_iter, tol : L-BFGS limits per fit.
    n_bootstrap : resamples of the accuracy CI.

    Returns
    -------
    LinearResult
    """
    X_train, y_train = check_dataset(X_train, y_train, which="train")
    X_test, y_test = check_dataset(X_test, y_test, which="test")
    check_same_dimensions(X_train, X_test)
    encoding = encode_labels(y_train, y_test)
    if encoding.n_train_classes < 2:
        raise InputError("the training labels hold a single class; a probe needs at least two")
    predicted = linear_predict(
        X_train, encoding.train, X_test, n_classes=encoding.n_train_classes,
        query_codes=encoding.test, C=C, val_size=val_size, seed=seed, max_iter=max_iter, tol=tol,
    )
    correct = predicted.predictions == encoding.test
    ci95 = bootstrap_ci(correct, n_resamples=n_bootstrap, seed=seed)
    scores = classification_scores(
        encoding.test, predicted.predictions, ci95=ci95, true_rank=predicted.true_rank,
        n_classes=encoding.n_train_classes,
    )
    return LinearResult(scores, predicted, encoding.classes)
