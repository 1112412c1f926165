"""Geometry diagnostics against closed forms, scikit-learn and hand-computed cases
(the known truths listed in docs/geometry.md)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from probekit import InputError, cka, diagnose
from probekit.geometry import GOOD_DIRECTION, clusters, graph, pairwise, spectrum


def simplex_etf(n_classes=10, dim=64, radius=1.0, seed=0):
    """C unit-norm (times radius) class means forming a simplex ETF in R^dim."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, n_classes)))
    centred = np.eye(n_classes) - 1.0 / n_classes
    means = centred @ basis.T
    return radius * means / np.linalg.norm(means, axis=1, keepdims=True)


def labelled_stats(X, y):
    n_classes = int(y.max()) + 1
    sums, _, _ = clusters.class_sums(X, y, n_classes)
    means = sums.sums / sums.counts[:, None]
    singular, directions = clusters.mean_directions(means)
    return sums, clusters.residuals(X, y, means, directions), singular


# ------------------------------------------------------------------ scikit-learn equality

@pytest.mark.parametrize(
    ("loader", "silhouette", "db", "ch"),
    [(load_iris, 0.722294, 0.751371, 487.3309), (load_digits, 0.266544, 2.15171, 144.1903)],
)
def test_cluster_indices_equal_scikit_learn(loader, silhouette, db, ch):
    X, y = loader(return_X_y=True)
    values = diagnose(X, y, sample_size=len(y)).values
    assert values["silhouette"] == pytest.approx(silhouette_score(X, y, metric="cosine"),
                                                 abs=1e-6)
    assert values["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, y), abs=1e-6)
    assert values["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, y),
                                                        rel=1e-9)
    assert values["silhouette"] == pytest.approx(silhouette, abs=1e-6)
    assert values["davies_bouldin"] == pytest.approx(db, abs=1e-5)
    assert values["calinski_harabasz"] == pytest.approx(ch, abs=1e-4)


def test_davies_bouldin_and_calinski_harabasz_hand_cases():
    X = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 4.0]])
    sums, res, _ = labelled_stats(X, np.array([0, 0, 1]))
    assert clusters.cluster_indices(sums, res)["davies_bouldin"] == pytest.approx(0.128037,
                                                                                  abs=1e-6)
    X = np.array([[0.0], [1.0], [4.0]])
    sums, res, _ = labelled_stats(X, np.array([0, 0, 1]))
    assert clusters.cluster_indices(sums, res)["calinski_harabasz"] == pytest.approx(16.333333,
                                                                                     abs=1e-6)


def test_silhouette_is_exact_even_when_other_keys_are_sampled():
    X, y = load_digits(return_X_y=True)
    exact = silhouette_score(X, y, metric="cosine")
    sampled = diagnose(X, y, sample_size=600, seed=1)
    assert sampled["silhouette"] == pytest.approx(exact, abs=1e-9)
    assert sampled.protocol["sample_size"] == 600
    full = diagnose(X, y, sample_size=len(y))
    assert sampled["map_at_r"] == pytest.approx(full["map_at_r"], abs=0.03)


# ------------------------------------------------------------------ exact similarity means

def test_similarity_means_equal_all_pairs_brute_force():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 7)) + 0.5
    y = rng.integers(0, 4, 90)
    values = diagnose(X, y).values
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    cosine = unit @ unit.T
    same = (y[:, None] == y[None, :]) & ~np.eye(90, dtype=bool)
    other = y[:, None] != y[None, :]
    assert values["intra_class_similarity"] == pytest.approx(cosine[same].mean(), abs=1e-12)
    assert values["inter_class_similarity"] == pytest.approx(cosine[other].mean(), abs=1e-12)
    distances = ((unit[:, None, :] - unit[None, :, :]) ** 2).sum(-1)
    assert values["alignment"] == pytest.approx(distances[same].mean(), abs=1e-12)
    assert values["alignment"] == pytest.approx(2 - 2 * values["intra_class_similarity"])
    distinct = ~np.eye(90, dtype=bool)
    assert values["anisotropy"] == pytest.approx(cosine[distinct].mean(), abs=1e-12)
    assert values["mean_norm"] == pytest.approx(np.linalg.norm(unit.mean(axis=0)))


def test_alignment_extremes():
    x = np.random.default_rng(1).normal(size=(20, 5))
    y = np.repeat(np.arange(10), 2)
    identical = diagnose(np.repeat(x[::2], 2, axis=0), y, metric="euclidean")
    opposite = diagnose(np.stack([x[::2], -x[::2]], axis=1).reshape(20, 5), y)
    assert identical["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert opposite["alignment"] == pytest.approx(4.0, abs=1e-12)


# ------------------------------------------------------------------ uniformity

def test_uniformity_closed_forms():
    same = diagnose(np.ones((50, 4)))
    assert same["uniformity"] == pytest.approx(0.0, abs=1e-12)
    assert same["anisotropy"] == pytest.approx(1.0, abs=1e-12)
    simplex = np.eye(10) - 0.1
    assert pairwise.uniformity(simplex / np.linalg.norm(simplex, axis=1, keepdims=True)) == \
        pytest.approx(-4 * 10 / 9, abs=1e-9)


@pytest.mark.parametrize(("dim", "expected"), [(2, -1.575), (3, -2.080)])
def test_uniformity_of_the_uniform_sphere(dim, expected):
    rng = np.random.default_rng(dim)
    points = rng.normal(size=(4000, dim))
    assert diagnose(points, sample_size=4000)["uniformity"] == pytest.approx(expected, abs=0.01)
    assert spectrum.uniform_sphere_uniformity(dim) == pytest.approx(expected, abs=1e-3)


def test_uniform_sphere_reference_values():
    for dim, expected in [(8, -3.083), (16, -3.513), (32, -3.752), (64, -3.875),
                          (128, -3.938), (256, -3.969)]:
        assert spectrum.uniform_sphere_uniformity(dim) == pytest.approx(expected, abs=1e-3)
    assert spectrum.uniform_sphere_uniformity(4096) == pytest.approx(-4 + 8 / 4096, abs=1e-5)


# ------------------------------------------------------------------ spectra

def test_rankme_of_rank_k_with_equal_singular_values():
    rng = np.random.default_rng(2)
    left, _ = np.linalg.qr(rng.normal(size=(500, 10)))
    right, _ = np.linalg.qr(rng.normal(size=(128, 10)))
    values = diagnose(left @ right.T * 3.0).values
    assert values["rankme"] == pytest.approx(10.002, abs=1e-3)
    assert values["effective_rank_99"] <= 10


def test_rankme_of_isotropic_gaussian_and_centring():
    rng = np.random.default_rng(3)
    sigma2, lam = spectrum.gram_spectrum(rng.normal(size=(25600, 64)))
    assert spectrum.rankme(np.sqrt(sigma2)) / 64 > 0.99
    offset = rng.normal(size=(25600, 64)) + 10.0
    sigma2, lam = spectrum.gram_spectrum(offset)
    assert spectrum.rankme(np.sqrt(sigma2)) < 20 < spectrum.rankme(np.sqrt(lam))


def test_pca_dimensions_and_participation_ratio_hand_case():
    lam = np.array([5.0, 3.0, 1.0, 1.0])
    assert [spectrum.explained_dimensions(lam, p) for p in (0.90, 0.95, 0.99)] == [3, 4, 4]
    assert spectrum.participation_ratio(lam) == pytest.approx(2.777778, abs=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.3])
def test_alpha_req_recovers_an_exact_power_law(alpha):
    ranks = np.arange(1, 301)
    fitted, r2 = spectrum.alpha_req(ranks ** -alpha)
    assert fitted == pytest.approx(alpha, abs=1e-9) and r2 == pytest.approx(1.0)
    short, _ = spectrum.alpha_req(np.arange(1, 41) ** -alpha)  # fewer than 100: 10..90 %
    assert short == pytest.approx(alpha, abs=1e-9)


def test_isoscore_extremes():
    rng = np.random.default_rng(4)
    _, lam = spectrum.gram_spectrum(rng.normal(size=(20000, 16)))
    assert spectrum.isoscore(lam / 20000, 16) > 0.98
    assert spectrum.isoscore(np.array([1.0] + [0.0] * 15), 16) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ neural collapse

def test_collapse_onto_a_simplex_etf():
    means = simplex_etf()
    y = np.repeat(np.arange(10), 30)
    values = diagnose(means[y] * 3.0, y).values
    for key in ("nc1", "cdnv", "nc2_equinorm", "nc2_equiangularity", "etf_error"):
        assert values[key] == pytest.approx(0.0, abs=1e-9), key
    assert values["nearest_centroid_accuracy"] == 1.0
    assert values["silhouette"] == pytest.approx(1.0, abs=1e-6)
    assert values["knn_label_agreement"] == 1.0 and values["map_at_r"] == 1.0


def test_noisy_etf_nc1_and_cdnv():
    rng = np.random.default_rng(5)
    means = simplex_etf(radius=5.0)
    y = np.repeat(np.arange(10), 5000)
    X = means[y] + rng.normal(size=(50000, 64)) * 0.5
    sums, res, singular = labelled_stats(X, y)
    values = clusters.neural_collapse(sums, res, singular)
    assert values["nc1"] == pytest.approx(0.081, rel=0.02)
    assert values["cdnv"] == pytest.approx(0.288, rel=0.02)


def test_nc1_equals_the_dense_pseudo_inverse_form():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 6)) + np.repeat(rng.normal(size=(4, 6)) * 2, 75, axis=0)
    y = np.repeat(np.arange(4), 75)
    sums, res, singular = labelled_stats(X, y)
    means = np.array([X[y == c].mean(axis=0) for c in range(4)])
    within = sum(np.outer(x - means[c], x - means[c]) for x, c in zip(X, y, strict=True)) / 300
    centred = means - means.mean(axis=0)
    between = centred.T @ centred / 4
    dense = np.trace(within @ np.linalg.pinv(between)) / 4
    assert clusters.neural_collapse(sums, res, singular)["nc1"] == pytest.approx(dense, rel=1e-9)


# ------------------------------------------------------------------ graph diagnostics

def test_circle_lattice_has_no_hubs():
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    circle = np.column_stack([np.cos(angles), np.sin(angles)])
    from probekit.neighbours import prepare_vectors, search

    vectors = prepare_vectors(circle, metric="euclidean")
    found = search(vectors, vectors, 2, metric="euclidean", exclude_self=True)
    assert graph.hubness(graph.k_occurrence(found.indices, 200, 2)) == {
        "hubness_skewness": 0.0, "robin_hood": 0.0, "antihub_rate": 0.0}


def test_hubness_grows_with_dimension():
    rng = np.random.default_rng(7)
    skews = [diagnose(rng.normal(size=(3000, dim)), metric="euclidean")["hubness_skewness"]
             for dim in (3, 300)]
    assert skews[0] < 1.0 < 4.0 < skews[1]


def uniform_plane(n=2000, seed=8):
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(100, 100)))
    return np.column_stack([rng.random((n, 2)), np.zeros((n, 98))]) @ rotation


def twonn_from_exact_neighbours(points: np.ndarray, copies: int = 1) -> float:
    """TwoNN of ``points`` from scikit-learn's exact float64 neighbours: the reference that
    probekit's float32 search must reproduce. With ``copies``, every point stands that many
    times in the data: its neighbours among the distinct points are the same, and its ratio
    r2/r1 enters the empirical distribution that many times."""
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=3).fit(points).kneighbors(points)
    return graph.twonn_dimension(np.repeat(distances[:, 1:3], copies, axis=0))


# probekit finds the same neighbours and recomputes their distances in float64 from float32
# rows: relative errors near 1e-7 in each ratio, so 1e-5 bounds what rounding can do to TwoNN
TWONN_ROUNDING = 1e-5


# TwoNN of N = 2000 uniform points of a square has a sampling spread of about 0.06 (measured:
# standard deviation 0.062 over 40 independent squares; the estimate is a regression on N
# ratios, so its spread shrinks as 1/sqrt(N)). Three spreads, 0.2, bound the distance to the
# true dimension; the distance to the same estimate from exact float64 neighbours bounds the
# numerics (probekit searches in float32), and only rounding may separate the two.
TWONN_SPREAD_2000 = 0.062


def test_twonn_of_a_plane_and_of_its_duplicates():
    plane = uniform_plane()
    exact = twonn_from_exact_neighbours(plane)
    ours = diagnose(plane, metric="euclidean")["intrinsic_dim_twonn"]
    assert ours == pytest.approx(exact, abs=TWONN_ROUNDING)
    assert ours == pytest.approx(2, abs=3 * TWONN_SPREAD_2000)
    doubled = np.vstack([plane, plane])  # copies are skipped as neighbours, counted as points
    assert diagnose(doubled, metric="euclidean")["intrinsic_dim_twonn"] == \
        pytest.approx(twonn_from_exact_neighbours(plane, copies=2), abs=TWONN_ROUNDING)


def test_twonn_of_an_offset_plane_under_cosine():
    """An affine plane far from the origin is, on the unit sphere, a small curved 2-D patch
    (1/50 of a radian across here): still 2-D. Its points are so nearly parallel that a
    float32 inner product (error ~6e-7 at D = 100) cannot order close neighbours (1 - cos
    ~1e-7); the search ranks by centred distances, so it finds the exact neighbours."""
    offset = uniform_plane() + 5.0
    unit = offset / np.linalg.norm(offset, axis=1, keepdims=True)
    exact = twonn_from_exact_neighbours(unit)
    ours = diagnose(offset)["intrinsic_dim_twonn"]
    assert ours == pytest.approx(exact, abs=TWONN_ROUNDING)
    assert ours == pytest.approx(2, abs=3 * TWONN_SPREAD_2000)


def test_twonn_of_a_five_dimensional_cube_and_mle():
    cube = np.random.default_rng(9).random((10000, 5))
    geometry = diagnose(cube, metric="euclidean", extra=("mle_intrinsic_dim",))
    assert 4.3 <= geometry["intrinsic_dim_twonn"] <= 5.3
    assert 4.0 <= geometry["mle_intrinsic_dim"] <= 5.5


def test_map_at_r_hand_vectors_from_pytorch_metric_learning():
    query = np.array([1, 1, 2, 3, 4])
    knn_labels = np.array([[0, 1, 1, 2, 2], [1, 0, 1, 1, 3], [4, 4, 4, 4, 2],
                           [3, 1, 3, 1, 3], [0, 0, 4, 2, 2]])
    r = np.array([3, 3, 5, 4, 5])  # reference label counts, queries not in the reference
    map_r, r_precision = pairwise.map_at_r(knn_labels == query[:, None], r)
    assert map_r.mean() == pytest.approx(0.293556, abs=1e-6)
    assert r_precision.mean() == pytest.approx(0.446667, abs=1e-6)


def test_map_at_r_one_dimensional_reference():
    query = np.arange(10.0)
    reference = np.arange(20) / 2.0
    labels = np.ones(20, dtype=int)
    labels[::2] = np.arange(10)
    relevant, r = [], []
    for value, label in zip(query, np.arange(10), strict=True):
        order = np.argsort(np.abs(reference - value), kind="stable")[1:]  # same source
        relevant.append(labels[order] == label)
        r.append(np.count_nonzero(labels == label) - 1)
    r = np.array(r)
    keep = r > 0
    map_r, _ = pairwise.map_at_r(np.array(relevant)[keep], r[keep])
    expected = (1 + 2.0 / 2 + 3.0 / 5 + 4.0 / 7 + 5.0 / 9) / 10
    assert expected == pytest.approx(0.372698, abs=1e-6)
    assert keep.sum() == 1  # only label 1 has other members; lone queries are skipped
    assert map_r.mean() == pytest.approx(expected, abs=1e-9)


def test_map_at_r_from_diagnose_equals_brute_force():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(120, 5))
    y = rng.integers(0, 3, 120)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    maps, precisions = [], []
    for i in range(120):
        sims = unit @ unit[i]
        order = [j for j in np.lexsort((np.arange(120), -sims)) if j != i]
        r = np.count_nonzero(y == y[i]) - 1
        hits = y[order[:r]] == y[i]
        precisions.append(hits.mean())
        maps.append(np.sum(np.cumsum(hits) / np.arange(1, r + 1) * hits) / r)
    values = diagnose(X, y).values
    assert values["map_at_r"] == pytest.approx(np.mean(maps), abs=1e-9)
    assert values["r_precision"] == pytest.approx(np.mean(precisions), abs=1e-9)


def test_knn_label_agreement_is_the_neighbourhood_hit():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(150, 4))
    y = rng.integers(0, 3, 150)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    hits = []
    for i in range(150):
        sims = unit @ unit[i]
        order = [j for j in np.lexsort((np.arange(150), -sims)) if j != i][:10]
        hits.append(np.mean(y[order] == y[i]))
    assert diagnose(X, y)["knn_label_agreement"] == pytest.approx(np.mean(hits), abs=1e-12)


# ------------------------------------------------------------------ CKA, extras, interface

def test_cka_closed_forms():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(300, 40))
    rotation, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    assert cka(X, 3 * X @ rotation + 1) == pytest.approx(1.0, abs=1e-9)
    assert cka(X, 3 * X @ rotation + 1, debiased=False) == pytest.approx(1.0, abs=1e-9)
    A, B = rng.normal(size=(200, 1000)), rng.normal(size=(200, 1000))
    assert cka(A, B, debiased=False) > 0.8
    assert abs(cka(A, B)) < 0.02
    with pytest.raises(InputError, match="same samples"):
        cka(A, B[:100])


def test_extras():
    X, y = load_iris(return_X_y=True)
    values = diagnose(X, y, extra=("kmeans", "trustworthiness", "isoscore")).values
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    found = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(X)
    assert values["kmeans_ari"] == pytest.approx(adjusted_rand_score(y, found))
    assert 0 <= values["kmeans_nmi"] <= 1 and 0 <= values["kmeans_ami"] <= 1
    assert 0.9 < values["trustworthiness"] <= 1 and 0 < values["isoscore"] < 1
    plane = uniform_plane(500)
    assert diagnose(plane, extra=("trustworthiness",))["trustworthiness"] == \
        pytest.approx(1.0, abs=1e-9)
    with pytest.raises(InputError, match="unknown extra"):
        diagnose(X, y, extra=("umap",))


def test_label_free_keys_only_without_labels():
    X, y = load_iris(return_X_y=True)
    labelled = diagnose(X, y).to_dict()
    free = diagnose(X).to_dict()
    label_keys = {"alignment", "intra_class_similarity", "inter_class_similarity",
                  "similarity_gap", "nc1", "cdnv", "nc2_equinorm", "nc2_equiangularity",
                  "etf_error", "nearest_centroid_accuracy", "silhouette", "davies_bouldin",
                  "calinski_harabasz", "knn_label_agreement", "map_at_r", "r_precision"}
    assert label_keys <= set(labelled) and not label_keys & set(free)
    assert {"uniformity", "rankme", "anisotropy", "hubness_skewness",
            "intrinsic_dim_twonn"} <= set(free)
    for key in set(labelled) - {"protocol", "warnings"}:
        assert key in GOOD_DIRECTION and np.isfinite(labelled[key])
    assert free["protocol"]["n_classes"] == 0 and labelled["protocol"]["n_classes"] == 3


def test_deterministic_and_string_labels():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    first = diagnose(X, names, sample_size=50, seed=3).to_dict()
    assert first == diagnose(X, names, sample_size=50, seed=3).to_dict()
    assert first == diagnose(X, y, sample_size=50, seed=3).to_dict()


def test_bad_input():
    with pytest.raises(InputError, match="rows but labels"):
        diagnose(np.ones((10, 3)), np.arange(9))
    with pytest.raises(InputError, match="at least 3"):
        diagnose(np.ones((2, 3)))


# ------------------------------------------------------------------ review regressions

def test_float32_offset_data_keeps_its_spectrum():
    rng = np.random.default_rng(13)
    left, _ = np.linalg.qr(rng.normal(size=(2000, 10)))
    right, _ = np.linalg.qr(rng.normal(size=(256, 10)))
    low_rank = (left @ right.T * 30.0).astype(np.float32)
    assert diagnose(low_rank)["rankme"] == pytest.approx(10.002, abs=0.01)
    offset = low_rank + np.float32(100.0)
    as64 = diagnose(offset.astype(np.float64), metric="euclidean").values
    as32 = diagnose(offset, metric="euclidean").values
    assert as32["rankme_centered"] == pytest.approx(as64["rankme_centered"], rel=1e-3)
    assert as32["effective_rank_99"] == as64["effective_rank_99"]


def test_nearest_centroid_with_a_large_common_offset_in_float32():
    rng = np.random.default_rng(14)
    y = rng.integers(0, 5, 2000)
    X = rng.normal(size=(5, 16))[y] * 0.3 + rng.normal(size=(2000, 16))
    means = np.array([X[y == c].mean(axis=0) for c in range(5)])
    expected = np.mean(((X[:, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1) == y)
    shifted = (X + 1000.0).astype(np.float32)
    assert diagnose(shifted, y)["nearest_centroid_accuracy"] == pytest.approx(expected,
                                                                              abs=0.002)


def test_twonn_and_mle_skip_copies_and_keep_equidistant_rows():
    plane = uniform_plane(1500)
    four_copies = np.vstack([plane] * 4)
    geometry = diagnose(four_copies, metric="euclidean", extra=("mle_intrinsic_dim",))
    assert geometry["intrinsic_dim_twonn"] == pytest.approx(
        twonn_from_exact_neighbours(plane, copies=4), abs=TWONN_ROUNDING)
    # the sampling spread of TwoNN on 1500 points of a square is 0.070 (40 draws)
    assert geometry["intrinsic_dim_twonn"] == pytest.approx(2, abs=3 * 0.070)
    assert geometry["mle_intrinsic_dim"] == pytest.approx(2, abs=0.3)
    grid = np.random.default_rng(15).integers(0, 12, size=(4000, 4)).astype(np.float64)
    unique = np.unique(grid, axis=0)
    on_grid = diagnose(grid, metric="euclidean")["intrinsic_dim_twonn"]
    on_unique = diagnose(unique, metric="euclidean")["intrinsic_dim_twonn"]
    assert on_grid == pytest.approx(on_unique, abs=0.3)


def test_silhouette_degenerate_and_with_zero_rows():
    same = np.ones((12, 3), dtype=np.float32)
    assert diagnose(same, np.arange(12) % 2)["silhouette"] == 0.0
    rng = np.random.default_rng(16)
    X = rng.normal(size=(120, 5)) + 0.3
    y = rng.integers(0, 3, 120)
    X[[3, 50, 77]] = 0.0
    values = diagnose(X, y, metric="euclidean").values
    assert values["silhouette"] == pytest.approx(silhouette_score(X, y, metric="cosine"),
                                                 abs=1e-9)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    unit = X / np.where(norms == 0, 1, norms)
    cosine = unit @ unit.T
    assert values["anisotropy"] == pytest.approx(cosine[~np.eye(120, dtype=bool)].mean(),
                                                 abs=1e-12)


def test_undefined_values_are_left_out_with_a_note():
    X = np.vstack([np.ones((10, 4)), np.ones((10, 4))])
    y = np.repeat([0, 1], 10)
    geometry = diagnose(X, y)
    assert "nc1" not in geometry.values and "cdnv" not in geometry.values
    assert any("undefined" in note and "nc1" in note for note in geometry.warnings)
    import json

    json.dumps(geometry.to_dict(), allow_nan=False)


def test_small_inputs_and_guards():
    with pytest.raises(InputError, match="at least 2 rows"):
        diagnose(np.eye(5), sample_size=1)
    tiny = diagnose(np.random.default_rng(17).normal(size=(3, 1)), np.array([0, 0, 1]),
                    extra=("trustworthiness", "kmeans"), sample_size=2)
    assert "trustworthiness" not in tiny.values
    assert any("trustworthiness" in note for note in tiny.warnings)
    assert any("kmeans" in note for note in tiny.warnings) or "kmeans_ari" in tiny.values
    with pytest.raises(InputError, match="overflow"):
        diagnose(np.full((5, 2), 1e200))
