"""Diagnostics of a k-nearest-neighbour graph: neighbourhood hit, hubness, intrinsic dimension.

The graph is the one the kNN probe already searched (queries -> database, neighbours sorted
nearest first, a query's own row removed by index in leave-one-out graphs), so these cost no
second search. Distances for the intrinsic-dimension estimators are recomputed from the vectors
for the few neighbours they need, so exact duplicates have distance exactly 0.
"""

from __future__ import annotations

import numpy as np

from probekit.arrays import row_chunks


def neighbourhood_hit(neighbour_codes: np.ndarray, query_codes: np.ndarray, k: int) -> float:
    """Mean share of a query's k nearest neighbours that carry its label (Paulovich et al. 2008,
    "neighbourhood hit"); range [0, 1], high is good."""
    return float(np.mean(neighbour_codes[:, :k] == query_codes[:, None]))


def jaccard_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise ``|A ∩ B| / |A ∪ B|`` of two bool tag matrices of one shape (1 for two empty
    sets: they agree)."""
    union = np.count_nonzero(a | b, axis=-1)
    shared = np.count_nonzero(a & b, axis=-1)
    return np.where(union > 0, shared / np.maximum(union, 1), 1.0)


def neighbour_jaccard(neighbour_indices: np.ndarray, query_tags: np.ndarray,
                      database_tags: np.ndarray) -> float:
    """Multi-label neighbourhood agreement: the mean Jaccard similarity between each query's
    tag set and those of its neighbours (``neighbour_indices`` (n, k) into the database), in
    row chunks. The multi-label counterpart of :func:`neighbourhood_hit`; 1 when every
    neighbour carries exactly the query's tags."""
    total, n, k = 0.0, *neighbour_indices.shape
    for start, stop in row_chunks(n, k * database_tags.shape[1]):
        neighbours = database_tags[neighbour_indices[start:stop]]
        queries = np.broadcast_to(query_tags[start:stop, None, :], neighbours.shape)
        total += float(jaccard_similarity(queries, neighbours).sum())
    return total / (n * k)


def k_occurrence(indices: np.ndarray, n_database: int, k: int) -> np.ndarray:
    """``N_k(x)``: how often each database row is among a query's k nearest neighbours."""
    return np.bincount(indices[:, :k].ravel(), minlength=n_database)


def hubness(occurrences: np.ndarray) -> dict[str, float]:
    """k-occurrence statistics of the database rows (Radovanović et al., JMLR 2010).

    ``hubness_skewness`` = the (biased) skewness of N_k (:func:`k_occurrence`), 0 when N_k is
    constant; ``robin_hood`` = Σ|N_k − mean N_k| / (2 Σ N_k), the share of occurrences that
    would have to move to make N_k constant (Feldbauer et al. 2018; Σ|N_k − k|/(2Nk) on a
    leave-one-out graph); ``antihub_rate`` = share of rows with N_k = 0. All low is good.
    """
    occurrences = occurrences.astype(np.float64)
    centred = occurrences - occurrences.mean()
    variance = np.mean(centred**2)
    skew = float(np.mean(centred**3) / variance**1.5) if variance > 1e-12 else 0.0
    return {
        "hubness_skewness": skew,
        "robin_hood": float(np.abs(centred).sum() / (2.0 * occurrences.sum())),
        "antihub_rate": float(np.mean(occurrences == 0)),
    }


def neighbour_distances(queries: np.ndarray, database: np.ndarray,
                        neighbours: np.ndarray, query_rows: np.ndarray | None = None
                        ) -> np.ndarray:
    """Euclidean distances from each query (``queries[query_rows]`` when given, read a chunk
    at a time) to the given database rows (-1 gives NaN), sorted ascending per row.
    Differences are taken in the vectors' own precision (identical rows give exactly 0),
    squares summed in float64."""
    width = neighbours.shape[1]
    out = np.empty(neighbours.shape)
    for start, stop in row_chunks(len(neighbours), width * database.shape[1]):
        chosen = neighbours[start:stop]
        rows = database[np.maximum(chosen, 0).ravel()].reshape(stop - start, width, -1)
        mine = queries[start:stop] if query_rows is None else queries[query_rows[start:stop]]
        diff = mine[:, None, :] - rows
        out[start:stop] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff, dtype=np.float64))
    out[neighbours < 0] = np.nan
    return np.sort(out, axis=1)


def row_ids(vectors: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes: equal rows share an id (for de-duplication).

    The bytes, read as 64-bit words w_j, are combined as Σ_j a_j w_j (mod 2^64) with fixed
    random odd multipliers a_j, then mixed; vectorised over blocks of rows (``vectors`` may
    be any array-like that gives rows by slices), so hashing 50k x 768 rows is cheap and a
    million rows need one block's temporaries."""
    n, dim = vectors.shape
    width = (dim * np.dtype(vectors.dtype).itemsize + 7) // 8
    multipliers = np.random.default_rng(0x9E3779B9).integers(
        1, 2**63, size=width, dtype=np.uint64) | np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    for start, stop in row_chunks(n, width):
        raw = np.ascontiguousarray(vectors[start:stop]).view(np.uint8).reshape(stop - start, -1)
        pad = (-raw.shape[1]) % 8
        if pad:
            raw = np.concatenate([raw, np.zeros((len(raw), pad), dtype=np.uint8)], axis=1)
        with np.errstate(over="ignore"):
            hashed = (raw.view(np.uint64) * multipliers).sum(axis=1, dtype=np.uint64)
            hashed ^= hashed >> np.uint64(29)
            hashed *= np.uint64(0xBF58476D1CE4E5B9)
            hashed ^= hashed >> np.uint64(32)
        out[start:stop] = hashed
    return out.view(np.int64)


def distinct_neighbours(indices: np.ndarray, query_ids: np.ndarray, database_ids: np.ndarray,
                        count: int, columns: int = 40) -> np.ndarray:
    """The first ``count`` neighbours of each query in the de-duplicated data set: neighbours
    identical to the query, or to an earlier neighbour, are skipped (by row id, so distinct
    rows at equal distances are all kept). -1 where a row has fewer within ``columns``."""
    width = min(columns, indices.shape[1])
    out = np.full((len(indices), count), -1, dtype=np.int64)
    for start, stop in row_chunks(len(indices), width, _DISTINCT_ELEMENTS):  # rows apart
        chosen = indices[start:stop, :width]
        ids = database_ids[chosen]
        keep = ids != query_ids[start:stop, None]
        for j in range(1, width):
            keep[:, j] &= (ids[:, j, None] != ids[:, :j]).all(axis=1)
        order = np.cumsum(keep, axis=1)
        rows, cols = np.nonzero(keep & (order <= count))
        out[start + rows, order[rows, cols] - 1] = chosen[rows, cols]
    return out


_DISTINCT_ELEMENTS = 1 << 21  # neighbour ids de-duplicated at once (16 MiB of uint64)


def twonn_dimension(distances: np.ndarray, discard: float = 0.1) -> float:
    """TwoNN intrinsic dimension (Facco et al., Sci. Rep. 2017).

    ``distances`` holds each point's two nearest distinct neighbours (rows with NaN are
    skipped). ``μ = r₂/r₁`` per point; with F the empirical CDF of μ, fit
    ``−log(1 − F) = d log μ`` through the origin after discarding the largest ``discard``
    share of μ. Descriptive (no good direction); underestimates high dimensions.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.sort(distances[:, 1] / distances[:, 0])
    mu = mu[np.isfinite(mu)]
    n = len(mu)
    if n < 3:
        return float("nan")
    keep = int(np.floor(n * (1.0 - discard)))
    x = np.log(mu[:keep])
    y = -np.log(1.0 - np.arange(keep) / n)
    return float((x @ y) / (x @ x)) if x @ x > 0 else float("nan")


def mle_dimension(distances: np.ndarray, k: int = 20) -> float:
    """Levina–Bickel MLE of intrinsic dimension (NeurIPS 2004) from each point's k nearest
    distinct neighbours (rows with NaN skipped):
    ``m(x) = [(1/(k−1)) Σ_{j<k} log(T_k(x)/T_j(x))]⁻¹`` averaged over the points."""
    radii = distances[np.isfinite(distances).all(axis=1) & (distances > 0).all(axis=1)]
    if not len(radii):
        return float("nan")
    logs = np.log(radii[:, -1:] / radii[:, :-1]).sum(axis=1) / (k - 1)
    logs = logs[logs > 0]
    return float(np.mean(1.0 / logs)) if len(logs) else float("nan")
