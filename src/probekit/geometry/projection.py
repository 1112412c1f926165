"""The 2-D map of an embedding space that the figures show: UMAP (cosine) or PCA.

umap-learn is imported here only, when a map is asked for. UMAP compiles its numba kernels on
first use; :func:`project_2d` turns on numba's on-disk cache for the ones umap-learn does not
cache itself (:func:`cache_umap_kernels`), so only the first map on a machine pays for it.
"""

from __future__ import annotations

import numpy as np

# UMAP's optimisation epochs: umap-learn's own choice above 10,000 rows, 500 below, where it is
# the larger half of a map's time; 200 keep the map's trustworthiness (0.988 vs 0.989 on
# scikit-learn's digits) at 40 % of the time
UMAP_EPOCHS = 200

PROJECTION_MAX = 20_000  # points drawn; above, a stratified seeded sample

def project_2d(X: np.ndarray, codes: np.ndarray, is_test: np.ndarray, *, seed: int = 0,
               max_points: int = PROJECTION_MAX) -> tuple[dict, dict]:
    """A 2-D map of the rows: UMAP (cosine, seeded) when umap-learn is installed, else PCA of
    the L2-normalised rows.

    Above ``max_points`` rows a stratified seeded sample is drawn. UMAP is given the exact cosine
    neighbours (:func:`probekit.neighbours.search`) rather than searching for them itself, and
    numba's on-disk cache is turned on for its kernels (:func:`cache_umap_kernels`). The
    trustworthiness of the map (scikit-learn, 5 neighbours, on at most 2000 of the drawn
    points) says how far to trust it. Returns ``(arrays, info)``: ``projection_xy``,
    ``projection_codes``, ``projection_is_test``, and ``{"method", "n_points", "n_rows",
    "trustworthiness", "seed", "epochs", "warning"}``.
    """
    from sklearn.manifold import trustworthiness

    from probekit.arrays import unit_rows
    from probekit.errors import install_hint

    rows = stratified_sample(codes, max_points, seed)
    data = unit_rows(X, rows)  # the map is of directions (cosine), at any scale of the rows
    warning = None
    try:
        import umap  # noqa: F401
    except ImportError:
        umap = None
        warning = (f"UMAP needs the umap extra ({install_hint('umap')}); the map is a PCA "
                   "projection of the L2-normalised rows")
    if umap is not None and len(rows) > 15:
        xy = _umap(data, seed)
        method = "UMAP (cosine)"
    else:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(data)
        method = "PCA"
    check = stratified_sample(codes[rows], 2000, seed)
    neighbours = max(1, min(5, len(check) // 2 - 1))
    trust = float(trustworthiness(data[check], xy[check], n_neighbors=neighbours))
    arrays = {"projection_xy": np.asarray(xy, dtype=np.float32),
              "projection_codes": codes[rows], "projection_is_test": is_test[rows]}
    info = {"method": method, "n_points": int(len(rows)), "n_rows": int(len(codes)),
            "trustworthiness": trust, "seed": seed,
            "epochs": UMAP_EPOCHS if method.startswith("UMAP") else None, "warning": warning}
    return arrays, info


def _umap(data: np.ndarray, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """UMAP (cosine, seeded, one thread, :data:`UMAP_EPOCHS` epochs) of ``data``, on its exact
    cosine neighbours.

    Left to itself, umap-learn computes the cosine distances of fewer than 4096 rows by calling
    a numba function once per pair from Python (seconds for 2000 rows), and runs an
    approximate search (pynndescent) above that; both give way to one exact search here.
    """
    import warnings

    from umap import UMAP

    cache_umap_kernels()
    n_neighbors = min(n_neighbors, len(data) - 1)
    knn = cosine_neighbours(data, n_neighbors)
    model = UMAP(n_components=2, metric="cosine", random_state=seed, n_jobs=1,
                 n_neighbors=n_neighbors, n_epochs=UMAP_EPOCHS, precomputed_knn=knn)
    with warnings.catch_warnings():  # no search index is kept: the map never transforms
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return model.fit_transform(data)


def cosine_neighbours(data: np.ndarray, k: int) -> tuple:
    """``(indices, cosine distances)`` of each row's ``k`` nearest rows, itself included (as
    umap-learn's own search returns them); ``(None, None, None)``, umap-learn's "search
    yourself", when some row is all zeros."""
    from probekit.errors import InputError
    from probekit.neighbours import prepare_vectors, search

    try:
        vectors = prepare_vectors(data, metric="cosine")
    except InputError:  # zero rows: umap-learn's cosine handles them its own way
        return (None, None, None)
    found = search(vectors, vectors, k, metric="cosine")
    distances = np.maximum(1.0 - found.similarities, 0.0).astype(np.float32)
    return (found.indices, distances)


# umap-learn's numba kernels that a map compiles and that umap-learn does not mark cache=True
# (its own search's kernels included, for the rows the exact search cannot take)
UMAP_KERNELS = {"umap.umap_": ("smooth_knn_dist", "compute_membership_strengths"),
                "umap.layouts": ("clip", "_nb_optimize_layout_euclidean_single_epoch"),
                "umap.utils": ("fast_knn_indices",), "umap.distances": ("cosine",)}


def cache_umap_kernels() -> list[str]:
    """Turn on numba's on-disk cache for umap-learn's kernels in :data:`UMAP_KERNELS`.

    They are compiled on every run otherwise (about 10 s). numba keeps the cache in the
    ``__pycache__`` folder beside umap-learn's source when that is writable, else in the
    user's cache folder (``~/.cache/numba``), or in ``NUMBA_CACHE_DIR`` when it is set; with
    no writable place the kernels are compiled as before. Returns the kernels now cached.
    """
    import importlib

    try:
        from numba.core.caching import NullCache
    except ImportError:  # a numba whose internals moved: leave the kernels as they are
        return []
    cached = []
    for module_name, names in UMAP_KERNELS.items():
        module = importlib.import_module(module_name)
        for name in names:
            kernel = getattr(module, name, None)
            if kernel is None or not hasattr(kernel, "enable_caching"):
                continue  # another umap-learn version
            if isinstance(getattr(kernel, "_cache", None), NullCache):
                try:
                    kernel.enable_caching()
                except RuntimeError:  # no writable cache folder: compile as before
                    continue
            cached.append(f"{module_name}.{name}")
    return cached


def stratified_sample(codes: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of about ``size`` rows keeping each class's share (all rows when
    there are no more than ``size``)."""
    if len(codes) <= size:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(codes):
        members = np.flatnonzero(codes == c)
        take = max(1, int(round(size * len(members) / len(codes))))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))
