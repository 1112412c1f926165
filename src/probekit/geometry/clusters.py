"""Class-structure diagnostics from streamed per-class sums (no N x N matrix anywhere).

Two passes over the rows, in float64: the first sums rows (raw and L2-normalised) per class, the
second sums the residuals ``z - mu_y`` (scatter, spread, their projection on the directions of
the class means) and classifies every row by its nearest class mean. Every diagnostic below is
an exact function of those sums.

Notation (as in ``docs/geometry.md``): ẑ = z/‖z‖, S = Σ ẑᵢ, S_c = Σ_{i∈c} ẑᵢ, μ_c the class
means of the raw rows, μ_G the unweighted mean of the class means, M̃ = [μ_c − μ_G] (C x D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from probekit.arrays import normalised as normalised_rows
from probekit.arrays import row_chunks

_SCORE_ELEMENTS = 1 << 21  # rows x classes (or dimensions) per block of nearest-mean scores


@dataclass(frozen=True)
class ClassSums:
    """Sufficient statistics of one pass (raw sums ``sums``, normalised sums ``unit_sums``)."""

    counts: np.ndarray  # (C,) int64
    sums: np.ndarray  # (C, D) float64
    unit_sums: np.ndarray  # (C, D) float64
    unit_squares: np.ndarray  # (C,) Σ‖ẑᵢ‖²: n_c, less the class's all-zero rows


@dataclass(frozen=True)
class Residuals:
    """Second-pass statistics: per class Σ‖z − μ_c‖² (``scatter``) and Σ‖z − μ_c‖
    (``spread``); Σᵢ ((zᵢ − μ_yᵢ)·v_k)² for the right singular vectors v_k of M̃
    (``projected``); and each row's nearest class mean (``nearest``)."""

    scatter: np.ndarray
    spread: np.ndarray
    projected: np.ndarray
    nearest: np.ndarray


def _one_hot(codes: np.ndarray, n_classes: int):
    return sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_classes, len(codes))
    )


_PASS_ELEMENTS = 1 << 22  # values per block of the float64 passes (32 MiB, a few temporaries)


def _blocks(X: np.ndarray):
    for start, stop in row_chunks(*X.shape, _PASS_ELEMENTS):
        yield start, stop, np.asarray(X[start:stop], dtype=np.float64)


def class_sums(X: np.ndarray, codes: np.ndarray, n_classes: int,
               unit: np.ndarray | None = None) -> tuple[ClassSums, np.ndarray, np.ndarray]:
    """One streamed float64 pass: per-class sums of the rows and of the L2-normalised rows, and
    the Gram matrix of the rows shifted by the first block's mean (``unit`` may hold the
    normalised rows already).

    Returns ``(sums, shifted_gram, shift)``; the shift keeps the centred spectrum exact for
    data far from the origin (see :func:`probekit.geometry.spectrum.gram_spectrum`).
    """
    dim = X.shape[1]
    sums = np.zeros((n_classes, dim))
    unit_sums = np.zeros((n_classes, dim))
    unit_squares = np.zeros(n_classes)
    gram = np.zeros((dim, dim))
    shift = None
    for start, stop, block in _blocks(X):
        labels = codes[start:stop]
        hot = _one_hot(labels, n_classes)
        sums += hot @ block
        normalised = (normalised_rows(block) if unit is None
                      else np.asarray(unit[start:stop], np.float64))
        unit_sums += hot @ normalised
        unit_squares += np.bincount(labels, weights=np.einsum("ij,ij->i", normalised, normalised),
                                    minlength=n_classes)
        if shift is None:
            shift = block.mean(axis=0)
        # float64 products of shifted rows: the shift removes the common offset that would
        # swamp the small eigenvalues, float64 keeps the noise floor of σ (RankMe) far down
        shifted = block - shift
        gram += shifted.T @ shifted
    counts = np.bincount(codes, minlength=n_classes)
    return ClassSums(counts, sums, unit_sums, unit_squares), gram, shift


def class_means(X: np.ndarray, codes: np.ndarray, n_classes: int,
                rows: np.ndarray | None = None) -> np.ndarray:
    """Class means (C x D, float64) of ``X`` (or ``X[rows]``, with ``codes`` aligned to them)."""
    n = X.shape[0] if rows is None else len(rows)
    sums = np.zeros((n_classes, X.shape[1]))
    for start, stop in row_chunks(n, X.shape[1]):
        block = np.asarray(X[start:stop] if rows is None else X[rows[start:stop]], np.float64)
        sums += _one_hot(codes[start:stop], n_classes) @ block
    return sums / np.maximum(np.bincount(codes, minlength=n_classes), 1)[:, None]


def mean_directions(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values ``s`` and right singular vectors ``V`` (D x r) of the centred class means
    M̃, keeping ``s_k > 1e-10 s_max``."""
    centred = means - means.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    keep = singular > 1e-10 * max(singular.max(initial=0.0), np.finfo(float).tiny)
    return singular[keep], vt[keep].T


def residuals(X: np.ndarray, codes: np.ndarray, means: np.ndarray,
              directions: np.ndarray) -> Residuals:
    """Second pass: scatter, spread and projected scatter of ``z − μ_y``, and nearest means.

    Residuals are formed in the input's precision (float32 stays float32, anything else is
    float64); every sum is accumulated in float64."""
    n_classes = means.shape[0]
    scatter, spread = np.zeros(n_classes), np.zeros(n_classes)
    projected = np.zeros(directions.shape[1])
    nearest = np.empty(X.shape[0], dtype=np.int64)
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    cast_means, cast_directions = means.astype(dtype), directions.astype(dtype)
    for start, stop in row_chunks(X.shape[0], max(X.shape[1], n_classes), _SCORE_ELEMENTS):
        block = np.asarray(X[start:stop], dtype=dtype)
        labels = codes[start:stop]
        residual = block - cast_means[labels]
        squared = np.einsum("ij,ij->i", residual, residual, dtype=np.float64)
        scatter += np.bincount(labels, weights=squared, minlength=n_classes)
        spread += np.bincount(labels, weights=np.sqrt(squared), minlength=n_classes)
        projected += np.square(residual @ cast_directions, dtype=np.float64).sum(axis=0)
        nearest[start:stop] = _nearest(block, means)
    return Residuals(scatter, spread, projected, nearest)


def nearest_means(X: np.ndarray, means: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Index of the nearest class mean (euclidean) of every row of ``X`` (or ``X[rows]``),
    streamed over row chunks."""
    n = X.shape[0] if rows is None else len(rows)
    out = np.empty(n, dtype=np.int64)
    for start, stop in row_chunks(n, max(X.shape[1], len(means)), _SCORE_ELEMENTS):
        out[start:stop] = _nearest(X[start:stop] if rows is None else X[rows[start:stop]], means)
    return out


def _nearest(block: np.ndarray, means: np.ndarray) -> np.ndarray:
    """``argmin_c ‖z − μ_c‖² = argmax_c (z − m)·(μ_c − m) − ‖μ_c − m‖²/2`` in float64, with m
    the mean of the means so that a large common offset does not cancel."""
    centre = means.mean(axis=0)
    shifted = means - centre
    scores = (np.asarray(block, dtype=np.float64) - centre) @ shifted.T
    return (scores - 0.5 * np.einsum("cd,cd->c", shifted, shifted)).argmax(axis=1)


def similarity_means(sums: ClassSums) -> dict[str, float]:
    """Exact mean cosines of same-class and different-class pairs and what follows from them.

    ``s_in = Σ_c(‖S_c‖² − n_c)/Σ_c n_c(n_c − 1)`` (n_c here is Σ_{i∈c}‖ẑᵢ‖², which differs
    only when all-zero rows are allowed, i.e. not under cosine),
    ``s_out = (‖S‖² − Σ_c‖S_c‖²)/(N² − Σ_c n_c²)``, ``alignment = 2 − 2 s_in`` (Wang & Isola
    2020, α = 2: the mean of ‖ẑᵢ − ẑⱼ‖² over same-class pairs, range [0, 4], low is good).
    """
    n = sums.counts.astype(np.float64)
    squared = np.einsum("cd,cd->c", sums.unit_sums, sums.unit_sums)
    total = sums.unit_sums.sum(axis=0)
    same_pairs = np.sum(n * (n - 1))
    other_pairs = n.sum() ** 2 - np.sum(n**2)
    out = {}
    if same_pairs > 0:
        s_in = float((squared.sum() - sums.unit_squares.sum()) / same_pairs)
        out["alignment"] = 2.0 - 2.0 * s_in
        out["intra_class_similarity"] = s_in
    if other_pairs > 0:
        out["inter_class_similarity"] = float((total @ total - squared.sum()) / other_pairs)
    if len(out) == 3:
        out["similarity_gap"] = out["intra_class_similarity"] - out["inter_class_similarity"]
    return out


def anisotropy(sums: ClassSums) -> dict[str, float]:
    """Mean cosine of distinct pairs ``(‖S‖² − N)/(N(N − 1)) = (N‖m‖² − 1)/(N − 1)`` with
    ``m = S/N`` (exact, O(ND); ≈ 0 is good, 1 means every vector points the same way;
    Ethayarajh 2019) and ``mean_norm = ‖m‖``."""
    total = sums.unit_sums.sum(axis=0)
    n = float(sums.counts.sum())
    squared = float(total @ total)
    value = (squared - sums.unit_squares.sum()) / (n * (n - 1.0)) if n > 1 else 0.0
    return {"anisotropy": value, "mean_norm": float(np.sqrt(squared) / n)}


def neural_collapse(sums: ClassSums, res: Residuals, singular: np.ndarray) -> dict[str, float]:
    """NC1, CDNV and the NC2 terms; see :func:`_neural_collapse`. Values that are undefined
    (coincident class means) come back as NaN or inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _neural_collapse(sums, res, singular)


_PAIR_ELEMENTS = 1 << 20  # class pairs per block (8 MiB of float64): memory linear in C


def _class_pairs(centred: np.ndarray):
    """Yield ``(start, stop, inner, squared)`` for blocks of rows ``start:stop`` of the class
    pairs: inner products ``inner = M̃[start:stop] M̃ᵀ`` and squared distances between the
    (centred) class means, computed as ``‖a‖² + ‖b‖² − 2a·b`` and recomputed from the
    difference itself where that cancels (``≤ 1e-8 (‖a‖² + ‖b‖²)``; the diagonal among them),
    so coincident means are exactly 0 apart. Memory: one block of at most
    :data:`_PAIR_ELEMENTS` pairs, never C x C (or C x C x D)."""
    n_classes = len(centred)
    squares = np.einsum("cd,cd->c", centred, centred)
    step = max(1, _PAIR_ELEMENTS // max(1, n_classes))
    for start in range(0, n_classes, step):
        stop = min(n_classes, start + step)
        inner = centred[start:stop] @ centred.T
        scale = squares[start:stop, None] + squares[None, :]
        squared = scale - 2.0 * inner
        rows, cols = np.nonzero(squared <= 1e-8 * scale)
        difference = centred[start + rows] - centred[cols]
        squared[rows, cols] = np.einsum("ij,ij->i", difference, difference)
        yield start, stop, inner, squared


def _neural_collapse(sums: ClassSums, res: Residuals, singular: np.ndarray) -> dict[str, float]:
    """NC1, CDNV and the NC2 terms (Papyan, Han & Donoho 2020; Galanti et al. 2022).

    - ``nc1 = (1/C) tr(Σ_W Σ_B⁺) = Σ_k (v_kᵀ Σ_W v_k) / s_k²`` with M̃ = U S Vᵀ (no D x D
      pseudo-inverse); 0 is perfect collapse, low is good.
    - ``cdnv = mean_{c<c'} (V_c + V_c') / (2‖μ_c − μ_c'‖²)``, ``V_c = E‖z − μ_c‖²``; low is good.
    - ``nc2_equinorm`` = std/mean of ‖μ̃_c‖; ``nc2_equiangularity`` = std of cos(μ̃_c, μ̃_c');
      ``etf_error = ‖M̃M̃ᵀ/‖M̃M̃ᵀ‖_F − (I − 11ᵀ/C)/√(C − 1)‖_F``; all 0 for a simplex ETF.

    The pair terms stream over blocks of class pairs (:func:`_class_pairs`), so memory is
    linear in C·D even for thousands of classes.
    """
    n = sums.counts.astype(np.float64)
    means = sums.sums / n[:, None]
    n_classes = len(n)
    # no kept direction: every class mean coincides and NC1 is undefined, not 0
    out = {"nc1": float(np.sum(res.projected / n.sum() / singular**2)) if len(singular)
           else float("nan")}
    variances = res.scatter / n
    centred = means - means.mean(axis=0)
    largest = np.abs(centred).max()
    scaled = centred / largest  # every term below is scale-free: keep squares finite
    norms = np.sqrt(np.einsum("cd,cd->c", scaled, scaled))
    out["nc2_equinorm"] = float(norms.std() / norms.mean())
    gram_norm = math.sqrt(math.fsum(float(np.sum(inner**2))
                                    for _, _, inner, _ in _class_pairs(scaled)))
    etf_diagonal = (1.0 - 1.0 / n_classes) / math.sqrt(n_classes - 1)
    etf_off = -1.0 / n_classes / math.sqrt(n_classes - 1)
    cdnv_sum, etf_sum = 0.0, 0.0
    cosine = _Moments()
    for start, stop, inner, squared in _class_pairs(scaled):
        rows = np.arange(start, stop)
        upper = np.arange(n_classes)[None, :] > rows[:, None]
        distance = squared * largest**2  # back to the means' own scale for the CDNV
        cdnv_sum += float(np.sum(((variances[rows, None] + variances[None, :])
                                  / (2 * distance))[upper]))
        cosine.add((inner / np.outer(norms[rows], norms))[upper])
        target = np.full(inner.shape, etf_off)
        target[np.arange(stop - start), rows] = etf_diagonal
        etf_sum += float(np.sum((inner / gram_norm - target) ** 2))
    out["cdnv"] = cdnv_sum / (n_classes * (n_classes - 1) / 2)
    out["nc2_equiangularity"] = cosine.std()
    out["etf_error"] = math.sqrt(etf_sum)
    return out


class _Moments:
    """Count, mean and sum of squared deviations of values added in blocks, merged exactly as
    Chan, Golub & LeVeque (1979) do: the standard deviation without one E[x²] − E[x]²
    cancellation."""

    def __init__(self):
        self.count, self.mean, self.squares = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        if not values.size:
            return
        count, mean = values.size, float(values.mean())
        squares = float(np.sum((values - mean) ** 2))
        total = self.count + count
        delta = mean - self.mean
        self.squares += squares + delta**2 * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    def std(self) -> float:
        return math.sqrt(self.squares / self.count) if self.count else float("nan")


def cluster_indices(sums: ClassSums, res: Residuals) -> dict[str, float]:
    """Davies–Bouldin and Calinski–Harabasz on the raw rows, exactly as scikit-learn.

    DB = mean_c max_{c'≠c} (s_c + s_c')/‖μ_c − μ_c'‖ with s_c the mean distance to the centroid
    (low is good); CH = [tr B/(C − 1)] / [tr W/(N − C)] (high is good). Degenerate cases follow
    scikit-learn: DB = 0 when all spreads or all centroid distances vanish, CH = 1 when tr W = 0.
    References: Davies & Bouldin 1979; Caliński & Harabasz 1974.
    """
    n = sums.counts.astype(np.float64)
    means = sums.sums / n[:, None]
    n_total, n_classes = n.sum(), len(n)
    spread = res.spread / n
    centred = means - means.mean(axis=0)  # distances are shift-free; centring keeps them exact
    worst = np.zeros(n_classes)
    any_distance = False
    for start, stop, _, squared in _class_pairs(centred):
        distance = np.sqrt(squared)
        any_distance = any_distance or bool(distance.any())
        with np.errstate(divide="ignore"):  # the diagonal and coincident centroids score 0
            ratio = np.where(distance > 0, (spread[start:stop, None] + spread[None, :])
                             / np.where(distance > 0, distance, 1.0), 0.0)
        worst[start:stop] = ratio.max(axis=1)
    if not spread.any() or not any_distance:
        # scikit-learn's convention for degenerate clusterings; it tests with np.allclose,
        # whose absolute tolerance would also call data at a small scale (1e-9) degenerate
        out = {"davies_bouldin": 0.0}
    else:
        out = {"davies_bouldin": float(np.mean(worst))}
    overall = sums.sums.sum(axis=0) / n_total
    between = float(np.sum(n * np.sum((means - overall) ** 2, axis=1)))
    within = float(res.scatter.sum())
    # scikit-learn returns 1.0 when every class has collapsed onto its mean (within = 0)
    out["calinski_harabasz"] = (between * (n_total - n_classes) / (within * (n_classes - 1))
                                if within > 0 else 1.0)
    return out
