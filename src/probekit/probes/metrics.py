"""Classification metrics on integer label codes, bootstrap confidence intervals, and paired
tests of two classifiers scored on the same samples.

The point metrics equal scikit-learn's ``accuracy_score``, ``balanced_accuracy_score`` and
``f1_score(average="macro", zero_division=0)``; they are computed from one ``bincount`` each so
they cost O(N + C).

Paired comparisons of two classifiers A and B on the same test rows:

- McNemar's exact test: of the ``n = b + c`` samples the two disagree on (``b``: only A right,
  ``c``: only B right), under H0 ``b ~ Binomial(n, ½)``; two-sided
  ``p = min(1, 2 · P[X ≤ min(b, c)])`` (McNemar 1947; the exact form of Edwards 1948);
- a paired bootstrap 95 % interval of ``acc_B − acc_A``: the same resampled test rows for both
  (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probekit.errors import InputError

SCORE_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy")
TOP5_MIN_CLASSES = 10  # top-5 accuracy is reported only when there are at least this many classes
_BOOTSTRAP_ELEMENTS = 1 << 23  # resample counts per block


@dataclass(frozen=True)
class ClassificationScores:
    """Test-set scores of one probe (fractions in [0, 1]).

    ``top5_accuracy`` is ``None`` below :data:`TOP5_MIN_CLASSES` classes; ``ci95`` is the
    bootstrap 95 % interval of ``accuracy``.
    """

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    top5_accuracy: float | None
    ci95: tuple[float, float]

    def to_dict(self) -> dict:
        out = {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "macro_f1": self.macro_f1,
        }
        if self.top5_accuracy is not None:
            out["top5_accuracy"] = self.top5_accuracy
        out["ci95"] = list(self.ci95)
        return out


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of exact matches, ``mean(y_true == y_pred)``."""
    return float(np.mean(y_true == y_pred))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true``.

    ``(1/|C_true|) sum_c TP_c / n_c``; range [0, 1], higher is better; chance is ``1/|C_true|``.
    Brodersen et al., "The balanced accuracy and its posterior distribution", ICPR 2010.
    """
    size = int(max(y_true.max(), y_pred.max())) + 1
    support = np.bincount(y_true, minlength=size)
    hits = np.bincount(y_true[y_true == y_pred], minlength=size)
    present = support > 0
    return _mean(hits[present] / support[present])


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes in ``y_true`` or ``y_pred``.

    ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``; range [0, 1], higher is better.
    """
    size = int(max(y_true.max(), y_pred.max())) + 1
    true_count = np.bincount(y_true, minlength=size)
    pred_count = np.bincount(y_pred, minlength=size)
    hits = np.bincount(y_true[y_true == y_pred], minlength=size)
    present = (true_count + pred_count) > 0
    return _mean(2.0 * hits[present] / (true_count[present] + pred_count[present]))


def confusion_pairs(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """The non-zero cells of the confusion matrix as an (m, 3) int64 array of rows ``(true,
    predicted, count)``, sorted: memory linear in the test set, never C x C (7,000 speaker
    classes would take 392 MB as a dense int64 matrix)."""
    cells, counts = np.unique(np.asarray(y_true, np.int64) * n_classes
                              + np.asarray(y_pred, np.int64), return_counts=True)
    return np.column_stack([cells // n_classes, cells % n_classes, counts]).astype(np.int64)


def _mean(values: np.ndarray) -> float:
    """Mean of per-class values with an exactly rounded sum (``math.fsum``), so the result does
    not depend on the order of the classes, i.e. on how they are numbered."""
    return math.fsum(values.tolist()) / len(values)


def bootstrap_ci(
    correct: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> np.ndarray:
    """Percentile bootstrap interval of the mean of each column of ``correct``.

    Every column is resampled with the same ``n_resamples`` draws of N test indices (with
    replacement), so intervals of several probes on one test set are paired. Vectorised: a block
    of draws becomes a count matrix ``W`` (resamples x N) and all means are ``W @ correct / N``.

    Parameters
    ----------
    correct : (N,) or (N, M) array of 0/1 (per-sample correctness of M probes).
    n_resamples, level, seed : number of bootstrap resamples, coverage, random seed.

    Returns
    -------
    (M, 2) array of ``[low, high]`` (a (2,) array for 1-D input).

    References
    ----------
    Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13 (percentile interval).
    """
    values = np.asarray(correct, dtype=np.float64)
    single = values.ndim == 1
    values = values.reshape(len(values), -1)
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, values.shape[1]))
    block = max(1, _BOOTSTRAP_ELEMENTS // n)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        draws = rng.integers(0, n, size=(stop - start, n))
        draws += np.arange(stop - start)[:, None] * n
        counts = np.bincount(draws.ravel(), minlength=(stop - start) * n)
        means[start:stop] = counts.reshape(stop - start, n) @ values / n
    tail = 100.0 * (1.0 - level) / 2.0
    bounds = np.percentile(means, [tail, 100.0 - tail], axis=0).T
    return bounds[0] if single else bounds


def classification_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    ci95: tuple[float, float],
    true_rank: np.ndarray | None = None,
    n_classes: int,
) -> ClassificationScores:
    """All scores of one probe. ``true_rank[i]`` is the 0-based rank of sample i's true class in
    the probe's ordering of classes (``inf`` where the probe gave it no score); it yields top-5
    accuracy when ``n_classes >= 10``."""
    top5 = None
    if true_rank is not None and n_classes >= TOP5_MIN_CLASSES:
        top5 = float(np.mean(true_rank < 5))
    return ClassificationScores(
        accuracy=accuracy(y_true, y_pred),
        balanced_accuracy=balanced_accuracy(y_true, y_pred),
        macro_f1=macro_f1(y_true, y_pred),
        top5_accuracy=top5,
        ci95=(float(ci95[0]), float(ci95[1])),
    )


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on paired per-sample correctness.

    Returns ``{"only_a": b, "only_b": c, "p_value": p}`` with
    ``p = min(1, 2 · Σ_{i ≤ min(b, c)} C(b + c, i) / 2^(b + c))`` (1 when the runs never
    disagree).
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise InputError(f"paired correctness of different lengths: {a.shape} vs {b.shape}")
    from scipy import stats

    only_a, only_b = int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else min(1.0, 2.0 * float(stats.binom.cdf(min(only_a, only_b), n, 0.5)))
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def paired_difference_ci(correct_a: np.ndarray, correct_b: np.ndarray, *,
                         n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of ``mean(correct_b) − mean(correct_a)`` with both
    runs resampled on the same rows."""
    difference = np.asarray(correct_b, np.float64) - np.asarray(correct_a, np.float64)
    low, high = bootstrap_ci(difference, n_resamples=n_resamples, seed=seed)
    return float(low), float(high)


SIGNIFICANCE_LEVEL = 0.05  # a paired difference with McNemar p below this is called significant


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray, *, n_resamples: int = 1000,
                      seed: int = 0) -> dict:
    """Two classifiers' per-sample correctness on the same rows, compared: their accuracies,
    ``difference = acc_B − acc_A``, its paired bootstrap 95 % interval
    (:func:`paired_difference_ci`), and McNemar's exact test (:func:`mcnemar_exact`)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    test = mcnemar_exact(a, b)
    low, high = paired_difference_ci(a, b, n_resamples=n_resamples, seed=seed)
    return {"n_paired": int(a.size), "a": float(a.mean()), "b": float(b.mean()),
            "difference": float(b.mean() - a.mean()), "difference_ci95": [low, high],
            "only_a": test["only_a"], "only_b": test["only_b"], "p_value": test["p_value"],
            "test": "McNemar exact, two-sided"}
