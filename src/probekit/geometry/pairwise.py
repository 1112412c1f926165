"""Pairwise diagnostics: uniformity, silhouette, MAP@R.

Nothing is N x N: uniformity takes all pairs of a seeded sample (blocks of rows), the
silhouette is exact for every row from class sums, and MAP@R ranks a seeded sample of queries
against all rows with one exact search.
"""

from __future__ import annotations

import numpy as np

_BLOCK_ELEMENTS = 1 << 24  # similarities per block of queries
_SILHOUETTE_ELEMENTS = 1 << 21  # rows x classes per block of the silhouette's distance sums


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of ``min(n, size)`` row indices (all rows when ``size >= n``)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def uniformity(unit: np.ndarray, t: float = 2.0) -> float:
    """Wang & Isola (ICML 2020) uniformity ``log mean_{i<j} exp(−t‖ẑᵢ − ẑⱼ‖²)`` over all pairs
    of the given L2-normalised rows. Lower is more uniform; depends on D (see
    :func:`probekit.geometry.spectrum.uniform_sphere_uniformity`). With ‖ẑᵢ − ẑⱼ‖² = 2 − 2 cos every
    term lies in [e^{−4t}, 1], so the float64 sum needs no log-sum-exp shift; the mean over
    ordered pairs i ≠ j equals the mean over unordered ones.
    """
    n = unit.shape[0]
    if n < 2:
        return 0.0
    total = 0.0
    step = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        cosine = unit[start:stop] @ unit.T
        np.minimum(cosine, 1.0, out=cosine)
        terms = np.exp(-t * (2.0 - 2.0 * cosine))
        # every unordered pair appears twice over all blocks; the diagonal (i, i) once
        total += terms.sum(dtype=np.float64) - np.trace(terms[:, start:stop], dtype=np.float64)
    return float(np.log(total / (n * (n - 1))))


def similarity_histograms(unit: np.ndarray, codes: np.ndarray, rows: np.ndarray,
                          bins: int = 100) -> dict[str, np.ndarray]:
    """Histogram counts of the cosines of same-class and of different-class pairs among
    ``rows`` (all pairs i < j), on ``bins`` equal bins over [−1, 1]."""
    cosine = np.clip(unit[rows] @ unit[rows].T, -1.0, 1.0)
    upper = np.triu(np.ones(cosine.shape, dtype=bool), k=1)
    same = (codes[rows][:, None] == codes[rows][None, :]) & upper
    edges = np.linspace(-1.0, 1.0, bins + 1)
    return {"similarity_edges": edges,
            "similarity_same": np.histogram(cosine[same], edges)[0],
            "similarity_different": np.histogram(cosine[upper & ~same], edges)[0]}


def silhouette(unit: np.ndarray, codes: np.ndarray, unit_sums: np.ndarray) -> float:
    """Exact cosine silhouette of every row, in O(N·C·D) from the class sums of the unit rows.

    Silhouette (Rousseeuw 1987): ``s(i) = (b − a)/max(a, b)`` with cosine distance 1 − cos, a the
    mean distance to the other members of i's class, b the smallest mean distance to another
    class, s = 0 for singletons; range [−1, 1], high is good; equal to scikit-learn's
    ``silhouette_score(metric="cosine")``. Cosine distance is linear in each unit vector, so
    ``Σ_{j∈c} (1 − ẑᵢ·ẑⱼ) = n_c − ẑᵢ·S_c`` (S_c the class sum; i's own term 1 − ẑᵢ·ẑᵢ is 0):
    no pairwise matrix is needed and no row is sampled.
    """
    n = unit.shape[0]
    counts = np.bincount(codes, minlength=unit_sums.shape[0]).astype(np.float64)
    # distances at rounding level are zero: identical rows give a = b = 0 and s = 0
    tolerance = 8 * float(np.finfo(unit.dtype if unit.dtype == np.float32 else np.float64).eps)
    total = 0.0
    step = max(1, _SILHOUETTE_ELEMENTS // max(unit.shape[1], len(counts)))
    for start in range(0, n, step):
        block = np.asarray(unit[start:start + step], dtype=np.float64)
        own = codes[start:start + len(block)]
        rows = np.arange(len(block))
        distance_sums = counts[None, :] - block @ unit_sums.T
        # i's own term 1 − ‖ẑᵢ‖² is 0 for unit rows, 1 for an all-zero row: take it out
        distance_sums[rows, own] -= 1.0 - np.einsum("ij,ij->i", block, block)
        own_size = counts[own]
        a = np.maximum(distance_sums[rows, own], 0.0) / np.maximum(own_size - 1, 1)
        means = np.maximum(distance_sums, 0.0) / np.maximum(counts, 1)
        means[rows, own] = np.inf
        means[:, counts == 0] = np.inf
        b = means.min(axis=1)
        largest = np.maximum(a, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (b - a) / largest
        s[(own_size <= 1) | ~np.isfinite(s) | (largest <= tolerance)] = 0.0
        total += s.sum()
    return float(total / n)


def retrieval(unit: np.ndarray, codes: np.ndarray, queries: np.ndarray, *,
              backend: str = "auto") -> dict[str, float]:
    """MAP@R and R-precision of the sampled query rows against all rows (cosine).

    Musgrave, Belongie & Lim (ECCV 2020): rank all other rows by cosine (the query itself
    removed by index), ``R = n_{yᵢ} − 1``; R-precision = hits in the top R / R;
    MAP@R = (1/R) Σ_{r≤R} P(r)·rel(r). Range [0, 1], high is good; queries of singleton
    classes are skipped. The ranking is an exact top-(R_max + 1) search of the queries, in
    chunks of queries whose lists hold at most :data:`RETRIEVAL_ELEMENTS` entries (R_max is
    the largest class: thousands of rows deep on a large data set).
    """
    from probekit.neighbours import search

    counts = np.bincount(codes)
    depth = int(counts.max()) - 1
    r = counts[codes[queries]] - 1
    keep = r > 0
    if depth < 1 or not keep.any():
        return {}
    k = min(depth + 1, unit.shape[0])
    step = max(1, RETRIEVAL_ELEMENTS // k)
    map_r, precision = [], []
    for start in range(0, len(queries), step):
        chunk, kept = queries[start:start + step], keep[start:start + step]
        indices = search(unit[chunk], unit, k, metric="cosine", backend=backend).indices
        mine = indices == chunk[:, None]
        mine[~mine.any(axis=1), -1] = True  # self not returned (duplicates): drop the last one
        ranked = indices[~mine].reshape(len(chunk), indices.shape[1] - 1)
        relevant = codes[ranked] == codes[chunk][:, None]
        chunk_map, chunk_precision = map_at_r(relevant[kept], r[start:start + step][kept])
        map_r.append(chunk_map)
        precision.append(chunk_precision)
    return {"map_at_r": float(np.concatenate(map_r).mean()),
            "r_precision": float(np.concatenate(precision).mean())}


RETRIEVAL_ELEMENTS = 1 << 23  # entries of one chunk's top-k lists in MAP@R (about 100 MB)


def map_at_r(relevant: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query MAP@R and R-precision from ranked relevance (queries x depth, depth >= R).

    ``MAP@R = (1/R) Σ_{i≤R} P(i) rel(i)``, ``P(i)`` = precision at i; ``R-precision`` = hits in
    the top R / R (Musgrave et al. 2020).
    """
    depth = relevant.shape[1]
    within = np.arange(depth)[None, :] < r[:, None]
    hits = relevant & within
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, depth + 1)
    map_r = np.sum(precision_at * hits, axis=1) / r
    return map_r, hits.sum(axis=1) / r
