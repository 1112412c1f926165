"""Geometry diagnostics: why a space classifies as well as it does.

:func:`diagnose` computes the default set of diagnostics (``docs/geometry.md`` lists their
formulas, conventions and the known truths the tests check) from three shared passes: streamed
per-class sums in float64 (:mod:`~probekit.geometry.clusters`,
:mod:`~probekit.geometry.spectrum`), one neighbour graph (:mod:`~probekit.geometry.graph`: the
kNN probe's own when called from ``dual_probe``) and seeded query samples against all rows
(:mod:`~probekit.geometry.pairwise`). :func:`describe` is the shared computation behind both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from probekit.arrays import UnitRows
from probekit.errors import InputError
from probekit.geometry import clusters, graph, pairwise, spectrum
from probekit.labels import encode_labels
from probekit.neighbours import (
    Neighbours,
    SearchMethod,
    check_against_exact,
    check_metric,
    prepare_vectors,
    search,
    search_method,
)
from probekit.validate import check_embeddings, check_labels, check_lengths

NEIGHBOURHOOD_K = 10
MLE_K = 20
UNIFORMITY_MAX = 10_000  # all pairs of at most this many sampled rows
RETRIEVAL_MAX = 2_000  # MAP@R queries: each is ranked against all N to depth R_max
SIMILARITY_ROWS = 2_000  # rows whose pair cosines feed the similarity histograms
EXTRAS = ("mle_intrinsic_dim", "kmeans", "trustworthiness", "isoscore")

#: The good direction of every key: "up", "down", or "none" (descriptive).
GOOD_DIRECTION = {
    "alignment": "down", "uniformity": "down", "uniformity_excess": "down",
    "rankme": "up", "rankme_centered": "up", "effective_rank_90": "up",
    "effective_rank_99": "up", "participation_ratio": "up", "alpha_req": "none",
    "alpha_req_r2": "none", "anisotropy": "down", "mean_norm": "down",
    "intra_class_similarity": "up", "inter_class_similarity": "down", "similarity_gap": "up",
    "nc1": "down", "cdnv": "down", "nc2_equinorm": "down", "nc2_equiangularity": "down",
    "etf_error": "down", "nearest_centroid_accuracy": "up", "ncc_linear_agreement": "up",
    "silhouette": "up", "davies_bouldin": "down", "calinski_harabasz": "up",
    "knn_label_agreement": "up", "neighbour_jaccard": "up", "hubness_skewness": "down",
    "robin_hood": "down",
    "antihub_rate": "down", "map_at_r": "up", "r_precision": "up",
    "intrinsic_dim_twonn": "none", "mle_intrinsic_dim": "none", "kmeans_nmi": "up",
    "kmeans_ami": "up", "kmeans_ari": "up", "trustworthiness": "up", "isoscore": "up",
}


@dataclass(frozen=True)
class Graph:
    """A neighbour graph from queries to a database (rows prepared for ``metric``).

    ``leave_one_out`` graphs have the queries equal to the database, self removed by index.
    """

    neighbours: Neighbours
    queries: np.ndarray
    database: np.ndarray
    query_codes: np.ndarray | None
    database_codes: np.ndarray | None
    metric: str
    leave_one_out: bool
    database_ids: np.ndarray | None = None  # row ids (graph.row_ids) when already known
    recall: dict | None = None  # {k: recall@k} measured when the search was approximate


@dataclass(frozen=True)
class Geometry:
    """Result of :func:`diagnose`: ``values`` (key -> float), how they were computed, notes."""

    values: dict[str, float]
    protocol: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    class_means: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The class means of the raw rows (C x D), for nearest-centroid predictions."""
    arrays: dict = field(default_factory=dict, repr=False, compare=False)
    """What the figures need: ``singular_values`` (centred, descending), ``k_occurrence``
    (N_k of the hubness graph), ``similarity_edges`` and the histogram counts
    ``similarity_same`` / ``similarity_different`` of sampled pair cosines."""

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def with_values(self, **values: float) -> Geometry:
        """A copy with more values (kept in the order of :data:`GOOD_DIRECTION`)."""
        merged = {**self.values, **values}
        ordered = {key: merged[key] for key in GOOD_DIRECTION if key in merged}
        return Geometry(ordered, self.protocol, self.warnings, self.class_means, self.arrays)

    def to_dict(self) -> dict:
        """Every value under its key, plus ``protocol`` and ``warnings``."""
        return {**self.values, "protocol": dict(self.protocol), "warnings": list(self.warnings)}



def diagnose(
    X,
    y=None,
    *,
    metric: str = "cosine",
    sample_size: int = 5000,
    seed: int = 0,
    extra: Iterable[str] = (),
    backend: str = "auto",
    method: SearchMethod | str | None = None,
    tags: np.ndarray | None = None,
) -> Geometry:
    """Geometry diagnostics of an embedding space (label-free ones only when ``y`` is None).

    Parameters
    ----------
    X : (N, D) embeddings; y : (N,) labels or None.
    metric : similarity of the neighbour graph (``"cosine"``, ``"euclidean"``, ``"ip"``); the
        similarity-based keys (alignment, uniformity, silhouette, MAP@R) are cosine by
        definition.
    sample_size : seeded sample of rows for the sampled keys: uniformity over all pairs of the
        sample (at most 10 000 rows), MAP@R / R-precision of the first 2000 sampled queries
        ranked against all N (each query costs a depth-R_max search; 2000 queries give a
        standard error near 0.005). The silhouette and all class-sum keys are exact.
    seed : seed of the samples (and of k-means).
    extra : opt-in keys from :data:`EXTRAS`.
    backend : neighbour-search backend of the one graph search (k = 10, or 20 with
        ``mle_intrinsic_dim``), leave-one-out.
    method : exact (default) or approximate graph search (see
        :class:`probekit.neighbours.SearchMethod`); an approximate graph's recall@k is measured
        against exact search on a seeded sample of 1000 rows and recorded in the protocol.
        The sampled searches (MAP@R's queries, the hubness sample) stay exact: they cost
        O(sample x N), not O(N²).
    tags : (N, C) bool tags of multi-label data: adds ``neighbour_jaccard`` from the same
        graph (:func:`probekit.geometry.graph.neighbour_jaccard` over the 10 nearest other rows).

    Returns
    -------
    Geometry
    """
    X = check_embeddings(X, name="embeddings")
    check_metric(metric)
    check_sample_size(sample_size)
    extras = check_extras(extra)
    codes, n_classes = None, 0
    if y is not None:
        labels = check_labels(y, name="labels")
        check_lengths(X, labels)
        encoding = encode_labels(labels)
        codes, n_classes = encoding.train, len(encoding.classes)
    if X.shape[0] < 3:
        raise InputError(f"geometry needs at least 3 samples, got {X.shape[0]}")
    vectors = prepare_vectors(X, metric=metric)
    ids = graph.row_ids(vectors)
    # TwoNN and the MLE skip copies of rows: search deep enough to find their neighbours
    # among the distinct rows even when every row has as many copies as the most copied one
    copies = int(np.unique(ids, return_counts=True)[1].max())
    needed = (MLE_K + 2 if "mle_intrinsic_dim" in extras else NEIGHBOURHOOD_K) * copies
    k = min(X.shape[0] - 1, needed + copies - 1)
    how = search_method(method)
    found = search(vectors, vectors, k, metric=metric, exclude_self=True, backend=backend,
                   method=how)
    recall = None
    if how.approximate:
        recall = check_against_exact(vectors, vectors, found, (1, 2, NEIGHBOURHOOD_K, MLE_K),
                                     metric=metric, exclude_self=True, backend=backend,
                                     seed=seed).recall
    shape = describe(X, codes, n_classes=n_classes, graph=Graph(
        found, vectors, vectors, codes, codes, metric, True, ids, recall),
        sample_size=sample_size, seed=seed, extra=extras, backend=backend)
    if tags is None:
        return shape
    nearest = found.indices[:, :min(NEIGHBOURHOOD_K, found.indices.shape[1])]
    return shape.with_values(neighbour_jaccard=graph.neighbour_jaccard(nearest, tags, tags))


def check_sample_size(sample_size: int) -> None:
    if sample_size < 2:
        raise InputError(f"the geometry sample needs at least 2 rows, got {sample_size}")


def check_extras(extra: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(extra)
    unknown = [name for name in chosen if name not in EXTRAS]
    if unknown:
        raise InputError(f"unknown extra diagnostic(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(EXTRAS)}")
    return chosen


def describe(
    X: np.ndarray,
    codes: np.ndarray | None,
    *,
    n_classes: int,
    graph: Graph,
    sample_size: int = 5000,
    seed: int = 0,
    extra: tuple[str, ...] = (),
    backend: str = "auto",
) -> Geometry:
    """The diagnostics of the rows of ``X`` (raw) with class ``codes`` (or None), reusing
    ``graph`` whose database is ``X`` prepared for its metric."""
    n, dim = X.shape
    values: dict[str, float] = {}
    notes: list[str] = []
    labelled = codes is not None and n_classes >= 2
    # cosine-based keys: the graph's float32 unit rows (held or prepared on reading), or unit
    # rows normalised when read (float64 ones for float64 input): never a copy of all rows
    reusable = graph.metric == "cosine" and X.dtype != np.float64
    unit = (graph.database if reusable
            else UnitRows(X, dtype=np.float64 if X.dtype == np.float64 else np.float32))
    sums, shifted_gram, shift = clusters.class_sums(
        X, codes if labelled else np.zeros(n, dtype=np.int64), n_classes if labelled else 1,
        unit=unit)
    if labelled:
        values.update(clusters.similarity_means(sums))
    values.update(clusters.anisotropy(sums))

    sample = pairwise.sample_rows(n, sample_size, seed)
    pairs = sample if len(sample) <= UNIFORMITY_MAX else pairwise.sample_rows(n, UNIFORMITY_MAX,
                                                                               seed)
    values["uniformity"] = pairwise.uniformity(unit[pairs])
    values["uniformity_excess"] = values["uniformity"] - spectrum.uniform_sphere_uniformity(dim)

    sigma2, lam = spectrum.gram_spectrum(X, shifted_gram, shift, sums.sums.sum(axis=0))
    values["rankme"] = spectrum.rankme(np.sqrt(sigma2))
    values["rankme_centered"] = spectrum.rankme(np.sqrt(lam))
    if lam.sum() > 0:
        values["effective_rank_90"] = spectrum.explained_dimensions(lam, 0.90)
        values["effective_rank_99"] = spectrum.explained_dimensions(lam, 0.99)
        values["participation_ratio"] = spectrum.participation_ratio(lam)
        precision = np.finfo(X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64)
        values["alpha_req"], values["alpha_req_r2"] = spectrum.alpha_req(
            lam, rtol=dim * float(precision.eps))

    means = None
    if labelled:
        means = sums.sums / np.maximum(sums.counts, 1)[:, None]
        singular, directions = clusters.mean_directions(means)
        res = clusters.residuals(X, codes, means, directions)
        values.update(clusters.neural_collapse(sums, res, singular))
        values["nearest_centroid_accuracy"] = float(np.mean(res.nearest == codes))
        values["silhouette"] = pairwise.silhouette(unit, codes, sums.unit_sums)
        queries = (sample if len(sample) <= RETRIEVAL_MAX
                   else pairwise.sample_rows(n, RETRIEVAL_MAX, seed))
        values.update(pairwise.retrieval(unit, codes, queries, backend=backend))
        values.update(clusters.cluster_indices(sums, res))

    graph_protocol: dict = {}
    arrays = {"singular_values": np.sqrt(lam)}
    if labelled:
        arrays.update(pairwise.similarity_histograms(
            unit, codes, pairwise.sample_rows(n, SIMILARITY_ROWS, seed)))
    values.update(_graph_values(graph, n, labelled, extra, sample, backend, notes,
                                graph_protocol, arrays))
    values.update(_extra_values(X, codes if labelled else None, n_classes, lam, sample, seed,
                                extra, notes))
    protocol = {
        "n": n, "dim": dim, "n_classes": n_classes if labelled else 0,
        "metric": graph.metric, "sample_size": int(len(sample)), "seed": seed,
        "uniformity_rows": int(len(pairs)),
        "map_at_r_queries": int(min(len(sample), RETRIEVAL_MAX)) if labelled else 0,
        "k": min(NEIGHBOURHOOD_K, graph.neighbours.indices.shape[1]),
        "graph": "leave-one-out over the rows" if graph.leave_one_out
        else "queries (test) -> these rows (train)",
        "n_graph_queries": int(graph.neighbours.indices.shape[0]),
        "graph_search": dict(graph.neighbours.method),
        "extra": list(extra),
        **graph_protocol,
    }
    if graph.neighbours.method["name"] != "exact":
        protocol["graph_recall"] = dict(graph.recall or {})
        notes.append(_approximate_graph_note(graph))
    undefined = [key for key in GOOD_DIRECTION if key in values and not np.isfinite(values[key])]
    if undefined:
        notes.append(f"undefined for these data (left out): {', '.join(undefined)}")
    ordered = {key: float(values[key]) for key in GOOD_DIRECTION
               if key in values and key not in undefined}
    return Geometry(ordered, protocol, tuple(notes), means, arrays)


def _approximate_graph_note(g: Graph) -> str:
    """The one line that says which keys an approximate graph fed and what it missed."""
    recall = g.recall or {}
    measured = ", ".join(f"recall@{k} {recall[k]:.3f}" for k in ("2", "10") if k in recall)
    return (f"the neighbour graph comes from an approximate search "
            f"({g.neighbours.method['name']}; {measured or 'recall not measured'}): "
            "knn_label_agreement, hubness and the intrinsic dimension use it; MAP@R and the "
            "sampled hubness graph are exact")


def _graph_values(g: Graph, n: int, labelled: bool, extra, sample: np.ndarray,
                  backend: str, notes: list[str], protocol: dict, arrays: dict) -> dict:
    indices = g.neighbours.indices
    k = min(NEIGHBOURHOOD_K, indices.shape[1])
    out = {}
    if labelled and g.query_codes is not None and g.database_codes is not None:
        out["knn_label_agreement"] = graph.neighbourhood_hit(
            g.database_codes[indices], g.query_codes, k)
    stats, occurrences = _hubness(g, n, k, sample, backend, protocol)
    out.update(stats)
    arrays["k_occurrence"] = occurrences
    if g.metric == "ip":
        notes.append("intrinsic dimension needs distances: not computed for metric 'ip'")
        return out
    database_ids = g.database_ids if g.database_ids is not None else graph.row_ids(g.database)
    query_ids = database_ids if g.leave_one_out else graph.row_ids(g.queries)
    wanted = [("intrinsic_dim_twonn", 2, graph.twonn_dimension)]
    if "mle_intrinsic_dim" in extra:
        wanted.append(("mle_intrinsic_dim", MLE_K, graph.mle_dimension))
    for key, count, estimator in wanted:
        # a few spare candidates, re-ranked by exact distance: float32 similarities can swap
        # near neighbours of tightly packed points
        chosen = graph.distinct_neighbours(indices, query_ids, database_ids, count + 2,
                                           columns=indices.shape[1])
        usable = (chosen[:, :count] >= 0).all(axis=1)
        if usable.sum() < 3:
            notes.append(f"{key} needs {count} distinct neighbours per point; the graph "
                         f"({indices.shape[1]} neighbours) has them for {int(usable.sum())} "
                         "points")
            continue
        distances = graph.neighbour_distances(g.queries, g.database, chosen[usable],
                                              np.flatnonzero(usable))[:, :count]
        out[key] = estimator(distances) if count == 2 else estimator(distances, count)
    return out


def _hubness(g: Graph, n: int, k: int, sample: np.ndarray, backend: str,
             protocol: dict) -> tuple[dict, np.ndarray]:
    """Hubness needs a leave-one-out graph (on a test -> train graph each row is retrieved
    only k·n_test/n_train times on average, which skews N_k by itself): the probe's own when
    it is one, else one over the seeded sample of rows (k = 10)."""
    if g.leave_one_out:
        protocol["hubness_graph"] = f"leave-one-out over all {n} rows"
        occurrences = graph.k_occurrence(g.neighbours.indices, n, k)
        return graph.hubness(occurrences), occurrences
    rows = g.database[sample]
    k = min(NEIGHBOURHOOD_K, len(sample) - 1)
    found = search(rows, rows, k, metric=g.metric, exclude_self=True, backend=backend)
    protocol["hubness_graph"] = f"leave-one-out over {len(sample)} sampled rows"
    occurrences = graph.k_occurrence(found.indices, len(sample), k)
    return graph.hubness(occurrences), occurrences


def _extra_values(X, codes, n_classes, lam, sample, seed, extra, notes: list[str]) -> dict:
    out = {}
    if "isoscore" in extra:
        out["isoscore"] = spectrum.isoscore(lam, X.shape[1])
    rows = np.asarray(X[sample], dtype=np.float64) if ("kmeans" in extra
                                                       or "trustworthiness" in extra) else None
    if "kmeans" in extra and codes is not None and len(sample) < n_classes:
        notes.append(f"kmeans needs at least {n_classes} sampled rows, got {len(sample)}")
    elif "kmeans" in extra and codes is not None:
        from sklearn.cluster import KMeans
        from sklearn.metrics import (
            adjusted_mutual_info_score,
            adjusted_rand_score,
            normalized_mutual_info_score,
        )

        found = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit_predict(rows)
        truth = codes[sample]
        out["kmeans_nmi"] = normalized_mutual_info_score(truth, found)
        out["kmeans_ami"] = adjusted_mutual_info_score(truth, found)
        out["kmeans_ari"] = adjusted_rand_score(truth, found)
    neighbours = min(5, min(len(sample), 5000) // 2 - 1)
    if "trustworthiness" in extra and (X.shape[1] < 2 or neighbours < 1):
        notes.append("trustworthiness needs 2 dimensions and at least 4 rows")
    elif "trustworthiness" in extra:
        from sklearn.decomposition import PCA
        from sklearn.manifold import trustworthiness

        subset = rows[:5000]
        projected = PCA(n_components=2, random_state=seed).fit_transform(subset)
        out["trustworthiness"] = trustworthiness(subset, projected, n_neighbors=neighbours)
    return out
