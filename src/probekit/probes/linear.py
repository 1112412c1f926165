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
float64. The objective is a sum over row blocks (:mod:`probekit.probes.logistic`), evaluated in
numpy or in torch (``linear_backend``: on the GPU when there is one), on a standardised float32
copy of the training rows when it fits ``memory_budget`` bytes or on rows standardised again
from their source at every evaluation (:mod:`probekit.probes.standard`); the validation and
test rows are scored block by block and never copied. References: scikit-learn
``LogisticRegression``; the linear-probe protocol of Radford et al. 2021 (CLIP) and Oquab et
al. 2023 (DINOv2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from probekit.errors import InputError
from probekit.labels import encode_labels
from probekit.probes.lbfgs import DEFAULT_MAX_ITER, DEFAULT_TOL
from probekit.probes.logistic import (
    decision_blocks,
    minimise,
    objective_sums,
    resolve_linear_backend,
)
from probekit.probes.metrics import ClassificationScores, bootstrap_ci, classification_scores
from probekit.probes.standard import (
    DEFAULT_MEMORY_BUDGET,
    StandardRows,
    alike,
    check_memory_budget,
    check_rows,
    fit_scaling,
    standard_rows,
    standardised_copy,
)
from probekit.ranks import SINGLE, Ranks
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
    many (see :mod:`probekit.probes.standard`, which also streams them without copies).
    """
    scaling = fit_scaling(train, train_rows)
    check_rows(test, test_rows, scaling)
    return (standardised_copy(standard_rows(train, train_rows, scaling)),
            standardised_copy(standard_rows(test, test_rows, scaling)))


def softmax_penalty(C: float, n: int, n_classes: int) -> float:
    """λ = 1 / (C n), doubled for two classes (the module docstring says why)."""
    if C <= 0:
        raise InputError(f"C must be positive, got {C}")
    return (2.0 if n_classes == 2 else 1.0) / (C * n)


def fit_softmax(sums: Callable, *, n: int, dim: int, n_classes: int, C: float,
                init: LogisticFit | None = None, max_iter: int = DEFAULT_MAX_ITER,
                tol: float = DEFAULT_TOL) -> LogisticFit:
    """The multinomial fit at ``C`` on the block sums of
    :func:`probekit.probes.logistic.objective_sums` (``kind="softmax"``) over ``n`` rows."""
    start = None if init is None else np.concatenate([init.coef.ravel(), init.intercept])
    coef, intercept, n_iter, converged = minimise(
        sums, n=n, dim=dim, outputs=n_classes, penalty=softmax_penalty(C, n, n_classes),
        init=start, max_iter=max_iter, tol=tol)
    return LogisticFit(coef, intercept, n_iter, converged)


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    C: float,
    init: LogisticFit | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    backend: str = "numpy",
) -> LogisticFit:
    """Multinomial logistic regression by L-BFGS (see the module docstring for the objective).

    Parameters
    ----------
    X : (n, D) standardised features (used as float32); y : (n,) codes in
        ``0..n_classes-1``.
    C : inverse regularisation strength, as in scikit-learn.
    init : warm start.
    max_iter, tol : L-BFGS iteration limit and gradient tolerance (scikit-learn's defaults are
        100 and 1e-4).
    backend : ``"numpy"``, ``"torch"`` or ``"auto"``
        (:func:`probekit.probes.logistic.resolve_linear_backend`).
    """
    name, device = resolve_linear_backend(backend)
    X = np.asarray(X, dtype=np.float32)
    sums, _ = objective_sums(StandardRows(X), np.asarray(y), kind="softmax", outputs=n_classes,
                             backend=name, device=device)
    return fit_softmax(sums, n=X.shape[0], dim=X.shape[1], n_classes=n_classes, C=C, init=init,
                       max_iter=max_iter, tol=tol)


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
    backend : ``(name, device, rows)`` of the fits: ``"numpy"``/``"torch"``, ``"cpu"``/
        ``"cuda"``, and where the refit's training rows were held (``"copy"``, ``"stream"``,
        ``"device"``; the sweep's fit part, smaller, may have been held where they were not).
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
    backend: tuple[str, str, str] = ("numpy", "cpu", "copy")

    def protocol_dict(self) -> dict:
        name, device, rows = self.backend
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
            "backend": {"name": name, "device": device, "rows": rows},
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
    linear_backend: str = "numpy",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ranks: Ranks = SINGLE,
) -> LinearPredictions:
    """Standardise, sweep C on a validation split (:func:`sweep_C`), refit on all of train,
    predict the test set.

    The training data are ``X_train[train_rows]`` (all rows when ``None``), the test data
    ``X_test[test_rows]``; ``train_codes`` are their labels, in ``0..n_classes-1``.
    ``query_codes`` may hold larger codes (classes absent from training), which are always wrong
    and get rank ``inf``. ``progress(done, total)`` is called after each fit.
    ``linear_backend`` (``"numpy"``, ``"torch"``, ``"auto"``: torch on a CUDA device, else
    numpy) evaluates the objective; ``memory_budget`` (bytes) bounds the standardised copy of
    the training rows, which are streamed from ``X_train`` when the copy would not fit.

    ``ranks`` shards the work over the training rows among the processes of a torch.distributed
    run (:mod:`probekit.ranks`; every rank calls with the same arguments): the standardisation
    statistics, the outlier checks and every evaluation of the objective are summed over a
    fixed grid of row blocks, each rank reading and summing its share of the blocks (streamed:
    no rank holds a standardised copy), the blocks' sums added in block order on every rank.
    The validation and test rows are scored on every rank. Every rank returns exactly what one
    process returns.
    """
    grid = check_grid(C)
    if max_iter < 1:
        raise InputError(f"max_iter must be at least 1, got {max_iter}")
    budget = check_memory_budget(memory_budget)
    name, device = resolve_linear_backend(linear_backend)
    engine = {"backend": name, "device": device, "memory_budget": budget, "ranks": ranks}
    rows = np.arange(X_train.shape[0]) if train_rows is None else np.asarray(train_rows)
    notes: list[str] = []
    sweep = None
    chosen, start = grid[0], None
    fit_idx, val_idx = stratified_holdout(train_codes, test_size=val_size, seed=seed,
                                          what="validation size")
    sweeping = len(grid) > 1 and val_idx.size > 0
    if len(grid) > 1 and not sweeping:
        chosen = min(grid, key=lambda c: abs(np.log(c)))
        notes.append(f"too few training samples for a validation split: used C={chosen:g}")
    # every scaling and outlier check first: a bad row is refused before any fit
    fit_scale = fit_scaling(X_train, rows[fit_idx], ranks=ranks) if sweeping else None
    if sweeping:
        check_rows(X_train, rows[val_idx], fit_scale, which="validation", ranks=ranks)
    scale = fit_scaling(X_train, train_rows, ranks=ranks)
    check_rows(X_test, test_rows, scale, ranks=ranks)
    if sweeping:
        # the sweep sees the fit part only, standardised with the fit part's own statistics
        sweep = _sweep_softmax(
            standard_rows(X_train, rows[fit_idx], fit_scale), train_codes[fit_idx],
            standard_rows(X_train, rows[val_idx], fit_scale), train_codes[val_idx],
            grid=grid, n_classes=n_classes, max_iter=max_iter, tol=tol, engine=engine,
            progress=progress)
        chosen, start = sweep.C, sweep.fits[sweep.best]
        notes += sweep.notes(max_iter)
    train = standard_rows(X_train, train_rows, scale)
    sums, placement = objective_sums(train, np.asarray(train_codes), kind="softmax",
                                     outputs=n_classes, **engine)
    final = fit_softmax(sums, n=train.shape[0], dim=train.shape[1], n_classes=n_classes,
                        C=chosen, init=start, max_iter=max_iter, tol=tol)
    del sums  # the training copy
    if not final.converged:
        notes.append(f"linear probe: the refit at C={chosen:g} did not converge in "
                     f"{max_iter} iterations (raise max_iter)")
    test = standard_rows(X_test, test_rows, scale)

    def predict() -> tuple[np.ndarray, np.ndarray | None]:
        predictions = np.empty(test.shape[0], dtype=np.int64)
        true_rank = None if query_codes is None else np.empty(test.shape[0])
        for first, last, scores in decision_blocks(test, final.coef, final.intercept):
            predictions[first:last] = scores.argmax(axis=1)
            if true_rank is not None:
                true_rank[first:last] = _true_rank(scores, query_codes[first:last], n_classes)
        return predictions, true_rank

    predictions, true_rank = alike(ranks, predict)  # the test rows: on every rank
    return LinearPredictions(
        predictions=predictions, true_rank=true_rank, C=chosen,
        C_grid=grid, val_accuracy=() if sweep is None else sweep.scores,
        val_loss=() if sweep is None else sweep.losses,
        n_iter=() if sweep is None else sweep.n_iter,
        converged=() if sweep is None else sweep.converged, refit_n_iter=final.n_iter,
        refit_converged=final.converged, n_val=int(val_idx.size) if len(grid) > 1 else 0,
        warnings=tuple(notes), backend=(name, device, placement),
    )


def _sweep_softmax(fit_part: StandardRows, fit_y: np.ndarray, val_part: StandardRows,
                   val_y: np.ndarray, *, grid, n_classes, max_iter, tol, engine,
                   progress) -> Sweep:
    """:func:`sweep_C` of the multinomial fit: the fit part is placed once for every C (and
    released on return), the validation rows are scored block by block."""
    sums, _ = objective_sums(fit_part, np.asarray(fit_y), kind="softmax", outputs=n_classes,
                             **engine)
    n, dim = fit_part.shape

    def fit(value, init):
        model = fit_softmax(sums, n=n, dim=dim, n_classes=n_classes, C=value, init=init,
                            max_iter=max_iter, tol=tol)
        return model, model.n_iter, model.converged

    def score(model):  # validation accuracy, then cross-entropy on ties
        correct, loss = 0, 0.0
        for first, last, scores in decision_blocks(val_part, model.coef, model.intercept):
            logits, codes = scores.astype(np.float64), val_y[first:last]
            correct += int(np.count_nonzero(logits.argmax(axis=1) == codes))
            loss += float(np.sum(_softmax(logits)[1] - logits[np.arange(len(codes)), codes]))
        return correct / len(val_y), loss / len(val_y)

    def evaluate(model):  # the validation rows: on every rank
        return alike(engine["ranks"], lambda: score(model))

    return sweep_C(grid, fit, evaluate, progress)


def _true_rank(scores: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Rank of the true class among the scores (ties: argmax takes the lower index); ``inf``
    for codes of classes never seen in training."""
    seen = codes < n_classes
    true_scores = scores[np.arange(len(scores)), np.where(seen, codes, 0)]
    ahead = (scores > true_scores[:, None]) | (
        (scores == true_scores[:, None]) & (np.arange(n_classes) < codes[:, None]))
    rank = ahead.sum(axis=1).astype(np.float64)
    rank[~seen] = np.inf
    return rank


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
    linear_backend: str = "numpy",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
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
    linear_backend : ``"numpy"``, ``"torch"`` or ``"auto"`` (torch on a CUDA GPU, else numpy):
        where the objective is evaluated (docs/linear-backends.md).
    memory_budget : bytes of standardised training rows held in memory; larger training sets
        are standardised again at every evaluation, block by block.

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
        linear_backend=linear_backend, memory_budget=memory_budget,
    )
    correct = predicted.predictions == encoding.test
    ci95 = bootstrap_ci(correct, n_resamples=n_bootstrap, seed=seed)
    scores = classification_scores(
        encoding.test, predicted.predictions, ci95=ci95, true_rank=predicted.true_rank,
        n_classes=encoding.n_train_classes,
    )
    return LinearResult(scores, predicted, encoding.classes)
