"""Multi-label ("tagging") metrics on multi-hot labels and real-valued scores.

AudioSet / FSD50K style: ``y_true`` is an (N, C) 0/1 array (bool or int) and ``scores`` an (N, C)
float array, higher meaning more likely. The per-tag point metrics equal scikit-learn's
``average_precision_score``, ``roc_auc_score`` and ``f1_score`` column by column; they come from
ONE sort per tag (blocks of tags at a time, so memory stays bounded), cumulative counts and the
ends of runs of tied scores, without a Python loop over tags.

The bootstrap of the mAP reuses that sort: a resample is a vector of row counts, and every tag's
precision at each of its positive score levels is a ratio of weighted counts, so no resample is
ever sorted again (:func:`bootstrap_map_ci`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.special import ndtri

from probekit.errors import InputError

TAG_KEYS = ("map", "roc_auc", "d_prime", "d_prime_macro_auc", "micro_f1", "macro_f1",
            "micro_f1_tuned", "macro_f1_tuned")
_BLOCK_ELEMENTS = 1 << 21  # (tags x samples) elements sorted at once
_CHUNK_BINS = 1 << 12  # bins (of whole tags) per bootstrap chunk
_RESAMPLE_BLOCK = 16  # bootstrap resamples per sparse product
_FLOAT32_EXACT = 1 << 24  # float32 holds every integer count below this exactly


@dataclass(frozen=True)
class TaggingScores:
    """Test-set scores of one multi-label probe.

    All averages run over the ``n_tags_scored`` tags with at least one positive in the test
    labels. ``ci95`` is the percentile bootstrap 95 % interval of ``map``; ``roc_auc`` is the
    macro AUC over the scored tags that also have a negative; ``d_prime`` is the mean over
    those tags of their :func:`d_prime` (as HEAR's ``DPrime`` computes it; infinite when a tag's
    AUC is 1) and ``d_prime_macro_auc`` the d′ of the macro AUC (the AudioSet / PANNs
    convention). ``micro_f1`` and
    ``macro_f1`` threshold the scores at 0.5; the ``*_tuned`` pair uses per-tag thresholds tuned
    on a validation set (:func:`tune_thresholds`) and is ``None`` when none were given.
    """

    map: float
    ci95: tuple[float, float]
    roc_auc: float
    d_prime: float
    d_prime_macro_auc: float
    micro_f1: float
    macro_f1: float
    micro_f1_tuned: float | None
    macro_f1_tuned: float | None
    n_tags_scored: int

    def to_dict(self) -> dict:
        out = {
            "map": self.map,
            "ci95": list(self.ci95),
            "roc_auc": self.roc_auc,
            "d_prime": self.d_prime,
            "d_prime_macro_auc": self.d_prime_macro_auc,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
        }
        if self.micro_f1_tuned is not None:
            out["micro_f1_tuned"] = self.micro_f1_tuned
            out["macro_f1_tuned"] = self.macro_f1_tuned
        out["n_tags_scored"] = self.n_tags_scored
        return out


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate once at the door: (N, C) 0/1 labels -> bool, (N, C) scores -> float64."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise InputError(
            f"y_true and scores must be (N, C) arrays of one shape, got {y.shape} and {s.shape}"
        )
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise InputError("y_true must hold only 0 and 1 (multi-hot labels)")
        y = y.astype(bool)
    if np.isnan(s).any():
        raise InputError("scores contain NaN")
    return y, s


def _tag_blocks(n: int, n_tags: int):
    """Slices of tags whose (tags x n) working arrays hold about ``_BLOCK_ELEMENTS`` values."""
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n_tags, step):
        yield slice(start, min(n_tags, start + step))


def _rank(y: np.ndarray, s: np.ndarray):
    """Sort a block of tags by decreasing score (rows = tags: ``y``, ``s`` are (c, N)).

    Returns ``order`` (sample index at each rank), ``s_sorted``, ``y_sorted``, ``is_end`` (rank is
    the last of its run of tied scores), ``tp`` (positives at or above each rank) and ``prev_tp``
    (positives strictly above the run of tied scores that holds each rank).
    """
    order = np.argsort(-s, axis=1)
    s_sorted = np.take_along_axis(s, order, axis=1)
    y_sorted = np.take_along_axis(y, order, axis=1)
    is_end = np.ones_like(y_sorted)
    is_end[:, :-1] = s_sorted[:, 1:] != s_sorted[:, :-1]
    tp = np.cumsum(y_sorted, axis=1, dtype=np.int64)
    prev_tp = np.zeros_like(tp)
    # tp is non-decreasing, so a running max of its values at run ends is "tp at the last end"
    prev_tp[:, 1:] = np.maximum.accumulate(np.where(is_end, tp, 0), axis=1)[:, :-1]
    return order, s_sorted, y_sorted, is_end, tp, prev_tp


def tags_without_positives(y_true: np.ndarray) -> np.ndarray:
    """Column indices of the tags with no positive in ``y_true`` (they have no AP)."""
    return np.flatnonzero(~np.asarray(y_true).astype(bool).any(axis=0))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-tag average precision, equal to scikit-learn's ``average_precision_score``.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in decreasing order,
    where ``P_k`` and ``R_k`` are precision and recall when every sample scoring at least the
    k-th threshold is called positive (tied scores form one threshold; no interpolation). Only
    thresholds holding positives move recall, so ``AP = (1/P) sum_k q_k TP_k / N_k`` with ``q_k``
    the positives at threshold k, ``TP_k`` the positives and ``N_k`` the samples at or above it.
    Range [0, 1], higher is better; chance is the tag's prevalence.

    Parameters
    ----------
    y_true : (N, C) array of 0/1 (bool or int).
    scores : (N, C) float array, higher = more likely.

    Returns
    -------
    (C,) float64 array; NaN for tags with no positive in ``y_true``.

    References
    ----------
    Manning, Raghavan & Schütze, *Introduction to Information Retrieval*, 2008, sec. 8.4;
    scikit-learn ``sklearn.metrics.average_precision_score``.
    """
    y, s = _check(y_true, scores)
    n, n_tags = y.shape
    ap = np.full(n_tags, np.nan)
    for sl in _tag_blocks(n, n_tags):
        _, _, _, is_end, tp, prev_tp = _rank(y[:, sl].T, s[:, sl].T)
        n_at = np.arange(1, n + 1)
        contrib = np.where(is_end, (tp - prev_tp) * tp / n_at, 0.0)
        positives = tp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[sl] = np.where(positives > 0, contrib.sum(axis=1) / positives, np.nan)
    return ap


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro mean of :func:`average_precision` over the tags with at least one positive.

    Equals scikit-learn's ``average_precision_score(average="macro")`` on those columns; the
    skipped tags are :func:`tags_without_positives`. NaN when no tag has a positive.
    """
    ap = average_precision(y_true, scores)
    scored = ~np.isnan(ap)
    return float(ap[scored].mean()) if scored.any() else float("nan")


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-tag ROC AUC from the Mann-Whitney U statistic (average ranks for ties).

    ``AUC = U / (P N_neg)`` with ``U = sum_pos sum_neg [s_pos > s_neg] + 0.5 [s_pos = s_neg]``,
    the probability that a random positive outscores a random negative. Equals scikit-learn's
    ``roc_auc_score`` column by column. Range [0, 1], higher is better; chance is 0.5.

    Returns
    -------
    (C,) float64 array; NaN for tags with no positive or no negative.

    References
    ----------
    Hanley & McNeil, "The meaning and use of the area under a ROC curve", Radiology 143, 1982.
    """
    y, s = _check(y_true, scores)
    n, n_tags = y.shape
    auc = np.full(n_tags, np.nan)
    for sl in _tag_blocks(n, n_tags):
        _, _, _, is_end, tp, prev_tp = _rank(y[:, sl].T, s[:, sl].T)
        n_at = np.arange(1, n + 1)
        prev_n = np.zeros_like(tp)
        prev_n[:, 1:] = np.maximum.accumulate(np.where(is_end, n_at, 0), axis=1)[:, :-1]
        positives = tp[:, -1]
        negatives = n - positives
        q = tp - prev_tp  # positives in the run of ties (read at run ends)
        m = (n_at - prev_n) - q  # negatives in the run
        below = negatives[:, None] - (n_at - tp)  # negatives scoring strictly lower
        twice_u = np.where(is_end, 2 * q * below + q * m, 0).sum(axis=1)
        both = (positives > 0) & (negatives > 0)
        auc[sl] = np.where(both, twice_u / np.maximum(2 * positives * negatives, 1), np.nan)
    return auc


def d_prime(auc: float | np.ndarray) -> float | np.ndarray:
    """Sensitivity index from ROC AUC: ``d' = sqrt(2) * Phi^{-1}(AUC)``.

    The d' of two unit-variance Gaussians whose AUC this is, as AudioSet and HEAR report it
    (``scipy.stats.norm().ppf(auc) * np.sqrt(2.0)``). Nothing is clipped: AUC = 1 gives ``inf``,
    AUC = 0 gives ``-inf``, AUC = 0.5 gives 0, NaN stays NaN.

    References
    ----------
    Gemmeke et al., "Audio Set: An ontology and human-labeled dataset for audio events",
    ICASSP 2017; Macmillan & Creelman, *Detection Theory*, 2005, ch. 3.
    """
    out = np.sqrt(2.0) * ndtri(np.asarray(auc, dtype=np.float64))
    return float(out) if np.ndim(out) == 0 else out


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """Micro and macro F1 of 0/1 multi-label predictions.

    Micro: ``2 sum TP / (2 sum TP + sum FP + sum FN)`` over all (sample, tag) cells. Macro: the
    unweighted mean over ALL tags of ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``, where a tag with
    ``TP_c + FP_c + FN_c = 0`` (never true, never predicted) counts as 0 and stays in the mean.
    Both equal scikit-learn's ``f1_score(average=..., zero_division=0)``. Range [0, 1].
    """
    y, p = _check(y_true, y_pred)
    if not np.isin(p, (0.0, 1.0)).all():
        raise InputError("y_pred must hold only 0 and 1 (thresholded predictions)")
    p = p.astype(bool)
    tp = np.count_nonzero(y & p, axis=0)
    denom = y.sum(axis=0) + p.sum(axis=0)  # 2 TP + FP + FN
    micro = 2.0 * tp.sum() / denom.sum() if denom.sum() > 0 else 0.0
    per_tag = np.divide(2.0 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
    return float(micro), float(per_tag.mean()) if len(per_tag) else 0.0


def tune_thresholds(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-tag threshold maximising that tag's F1 on a validation set.

    Candidates are the tag's distinct scores; a sample is predicted positive when
    ``score >= threshold``. At candidate k, ``F1 = 2 TP_k / (TP_k + N_k + P)`` with ``N_k`` the
    samples at or above it, so one sort and a cumulative sum score every candidate. Ties in F1 go
    to the higher threshold. A tag with no positive gets ``+inf`` (never predicted for finite
    scores): every threshold has F1 = 0 there, and predicting nothing adds no false positive.

    Returns
    -------
    (C,) float64 array of thresholds.
    """
    y, s = _check(y_true, scores)
    n, n_tags = y.shape
    thresholds = np.full(n_tags, np.inf)
    for sl in _tag_blocks(n, n_tags):
        _, s_sorted, _, is_end, tp, _ = _rank(y[:, sl].T, s[:, sl].T)
        positives = tp[:, -1:]
        f1 = np.where(is_end, 2.0 * tp / (tp + np.arange(1, n + 1) + positives), -1.0)
        best = np.argmax(f1, axis=1)  # first maximum = highest threshold
        chosen = s_sorted[np.arange(len(best)), best]
        thresholds[sl] = np.where(positives[:, 0] > 0, chosen, np.inf)
    return thresholds


def _bins(y: np.ndarray, s: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Bin matrix of the weighted AP: ``M @ w`` gives every tag's bin sums for row weights w.

    For tag c let ``t_1 > ... > t_G`` be the distinct scores held by its positives; sample j falls
    in bin g when ``t_g`` is the highest of them with ``s_jc >= t_g`` (no bin below ``t_G``). With
    row weights w, let ``A_g`` be the weight of bin g and ``Q_g`` that of its positives (they all
    score exactly ``t_g``); then ``N_g`` and ``TP_g``, the cumulative sums of A and Q, are the
    weighted samples and positives at or above ``t_g``, and the weighted AP is
    ``(1/TP_G) sum_g Q_g TP_g / N_g``. Row ``2b`` of the returned (2K, N) CSR matrix is the
    indicator of A-bin b, row ``2b + 1`` that of Q-bin b, bins numbered tag-major; ``starts``
    (C + 1,) holds the first bin of each tag.
    """
    n, n_tags = y.shape
    n_bins = np.zeros(n_tags, dtype=np.int64)
    rows, cols = [], []
    for sl in _tag_blocks(n, n_tags):
        order, _, y_sorted, is_end, tp, prev_tp = _rank(y[:, sl].T, s[:, sl].T)
        pos_end = is_end & (tp > prev_tp)  # last rank of a run of ties holding a positive
        n_bins[sl] = pos_end.sum(axis=1)
        first = int(n_bins[: sl.start].sum()) + np.cumsum(n_bins[sl]) - n_bins[sl]
        bin_ = np.cumsum(pos_end, axis=1) - pos_end  # bin of each rank within its tag
        keep = bin_ < n_bins[sl, None]
        bin_ += first[:, None]
        rows += [2 * bin_[keep], 2 * bin_[y_sorted] + 1]
        cols += [order[keep], order[y_sorted]]
    starts = np.zeros(n_tags + 1, dtype=np.int64)
    np.cumsum(n_bins, out=starts[1:])
    rows, cols = np.concatenate(rows), np.concatenate(cols).astype(np.int32)
    dtype = np.float32 if n < _FLOAT32_EXACT else np.float64  # counts stay exact integers
    data = np.ones(len(rows), dtype=dtype)
    return sparse.csr_matrix((data, (rows, cols)), shape=(2 * int(starts[-1]), n)), starts


def _chunk_map_sums(bin_sums: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the tags' APs and number of tags with a positive, per resample.

    ``bin_sums`` (2k, B) are the rows of :func:`_bins` times the row counts of B resamples for a
    run of tags whose first bins are ``starts`` (local: from 0 to k). Counts become int64 so
    the cumulative sums are exact; the resample axis goes first so they run along memory.
    """
    first = starts[:-1][np.diff(starts) > 0]  # tags without a positive have no bin
    size = np.diff(np.append(first, starts[-1]))
    a = np.ascontiguousarray(bin_sums[0::2].T, dtype=np.int64)  # (B, k) weight of each bin
    q = np.ascontiguousarray(bin_sums[1::2].T, dtype=np.int64)  # (B, k) weight of its positives
    n_at = np.cumsum(a, axis=1)
    tp = np.cumsum(q, axis=1)
    if len(first) > 1:  # restart both sums at every tag
        n_at -= np.repeat(np.hstack([np.zeros_like(a[:, :1]), n_at[:, first[1:] - 1]]), size, 1)
        tp -= np.repeat(np.hstack([np.zeros_like(q[:, :1]), tp[:, first[1:] - 1]]), size, 1)
    contrib = q * tp / np.maximum(n_at, 1)  # n_at = 0 only where q = tp = 0
    sums = np.add.reduceat(contrib, first, axis=1)
    positives = tp[:, first + size - 1]
    scored = positives > 0
    ap = np.divide(sums, positives, out=np.zeros_like(sums), where=scored)
    return ap.sum(axis=1), scored.sum(axis=1)


def bootstrap_map_ci(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`mean_average_precision` over test rows.

    Resample r draws its N rows with ``rng.integers(0, N, size=N)``, the r-th such call on
    ``rng = np.random.default_rng(seed)``; its mAP equals (to rounding)
    ``mean_average_precision(y_true[idx], scores[idx])``, so tags with no drawn positive are left
    out of that resample's mean. Nothing is re-sorted: each tag is sorted once, its samples are
    put in bins between its positive score levels (:func:`_bins`), and the bin sums of a block
    of resamples are one sparse product of that bin matrix with the (N, block) row counts, taken
    a run of tags at a time so the working set stays small. Memory: the bin matrix (at most
    about N C + N nonzeros) plus one block. Resamples with no positive at all (NaN) are left out
    of the percentiles. Each resample costs one pass over the bin matrix: about N C operations
    for dense labels, far fewer for the sparse labels of tagging data.

    Returns
    -------
    ``(low, high)``; ``(nan, nan)`` when no tag has a positive.

    References
    ----------
    Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13 (percentile interval).
    """
    maps = _bootstrap_maps(*_check(y_true, scores), n_resamples=n_resamples, seed=seed)
    if np.isnan(maps).all():
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.nanpercentile(maps, [tail, 100.0 - tail])
    return float(low), float(high)


def _bootstrap_maps(y: np.ndarray, s: np.ndarray, *, n_resamples: int, seed: int) -> np.ndarray:
    """mAP of each bootstrap resample, (n_resamples,); see :func:`bootstrap_map_ci`."""
    n = y.shape[0]
    if n_resamples < 1:
        raise InputError(f"n_resamples must be at least 1, got {n_resamples}")
    matrix, starts = _bins(y, s)
    if starts[-1] == 0:
        return np.full(n_resamples, np.nan)
    # runs of whole tags holding about _CHUNK_BINS bins each
    cuts = np.unique(np.searchsorted(starts, np.arange(0, starts[-1], _CHUNK_BINS), "right") - 1)
    cuts = np.append(cuts, len(starts) - 1)
    chunks = [
        (matrix[2 * starts[c0] : 2 * starts[c1]], starts[c0 : c1 + 1] - starts[c0])
        for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    dtype = matrix.dtype
    del matrix
    rng = np.random.default_rng(seed)
    maps = np.empty(n_resamples)
    for start in range(0, n_resamples, _RESAMPLE_BLOCK):
        size = min(n_resamples, start + _RESAMPLE_BLOCK) - start
        draws = np.stack([rng.integers(0, n, size=n) for _ in range(size)])
        draws += np.arange(size)[:, None] * n  # resample b counts into b*n .. b*n + n - 1
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        weights = np.ascontiguousarray(counts.T, dtype=dtype)  # (N, block)
        total, count = np.zeros(size), np.zeros(size, dtype=np.int64)
        for chunk, local in chunks:
            ap_sum, n_scored = _chunk_map_sums(chunk @ weights, local)
            total += ap_sum
            count += n_scored
        with np.errstate(invalid="ignore"):
            maps[start : start + size] = np.where(count > 0, total / count, np.nan)
    return maps


def paired_map_difference(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, *,
                          n_resamples: int = 1000, seed: int = 0) -> dict:
    """Two scorers of the same tags on the same test rows, compared by mAP.

    Both are resampled with the same draws (those of :func:`bootstrap_map_ci` with ``seed``),
    so ``difference = mAP_B − mAP_A`` gets a paired percentile 95 % interval, and a two-sided
    bootstrap p-value ``min(1, 2 · min(P*[Δ ≤ 0], P*[Δ ≥ 0]))`` over the resamples (Efron &
    Tibshirani 1993, ch. 15-16; resamples without any positive are left out).
    """
    y, a = _check(y_true, scores_a)
    _, b = _check(y_true, scores_b)
    maps_a = _bootstrap_maps(y, a, n_resamples=n_resamples, seed=seed)
    maps_b = _bootstrap_maps(y, b, n_resamples=n_resamples, seed=seed)
    differences = (maps_b - maps_a)[~np.isnan(maps_a) & ~np.isnan(maps_b)]
    map_a, map_b = mean_average_precision(y, a), mean_average_precision(y, b)
    if not len(differences):
        low = high = p_value = float("nan")
    else:
        low, high = (float(v) for v in np.percentile(differences, [2.5, 97.5]))
        p_value = float(min(1.0, 2.0 * min(np.mean(differences <= 0), np.mean(differences >= 0))))
    return {"n_paired": int(len(y)), "a": map_a, "b": map_b, "difference": map_b - map_a,
            "difference_ci95": [low, high], "p_value": p_value,
            "test": "paired bootstrap of the mAP difference, two-sided"}


def tagging_scores(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    thresholds: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> TaggingScores:
    """All tagging scores of one probe on a test set.

    Tags without a positive in ``y_true`` are left out of every average (mAP, macro AUC, micro
    and macro F1, tuned or not; so their false positives do not count in the micro F1 either);
    the caller can name them with :func:`tags_without_positives`.
    ``thresholds`` (C,) are per-tag thresholds from :func:`tune_thresholds` on a validation set
    (never tune them on the test set); without them the ``*_tuned`` fields are ``None``.
    """
    y, s = _check(y_true, scores)
    scored = y.any(axis=0)
    ap = average_precision(y, s)
    auc = roc_auc(y, s)
    macro_auc = float(np.nanmean(auc)) if (~np.isnan(auc)).any() else float("nan")
    low, high = bootstrap_map_ci(y, s, n_resamples=n_bootstrap, seed=seed)
    y_s, s_s = y[:, scored], s[:, scored]
    micro, macro = f1_scores(y_s, s_s >= 0.5)
    micro_t = macro_t = None
    if thresholds is not None:
        t = np.asarray(thresholds, dtype=np.float64)
        if t.shape != (y.shape[1],):
            raise InputError(f"thresholds must have shape ({y.shape[1]},), got {t.shape}")
        micro_t, macro_t = f1_scores(y_s, s_s >= t[scored])
    return TaggingScores(
        map=float(ap[scored].mean()) if scored.any() else float("nan"),
        ci95=(low, high),
        roc_auc=macro_auc,
        d_prime=(float(np.mean(d_prime(auc[~np.isnan(auc)]))) if (~np.isnan(auc)).any()
                 else float("nan")),
        d_prime_macro_auc=float(d_prime(macro_auc)),
        micro_f1=micro,
        macro_f1=macro,
        micro_f1_tuned=micro_t,
        macro_f1_tuned=macro_t,
        n_tags_scored=int(scored.sum()),
    )
