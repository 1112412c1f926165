"""Exact top-k similarity search; the only module that knows the search backends.

One call returns, for every query, its ``k`` most similar database rows sorted from most to least
similar. Backends, in the order ``backend="auto"`` tries them:

``faiss-gpu``  faiss ``IndexFlatIP``/``IndexFlatL2`` on a GPU (the ``gpu`` extra and a GPU);
``torch``      chunked matrix products and ``torch.topk`` on CUDA (only when CUDA is present; on
               the CPU only when asked for by name);
``faiss-cpu``  faiss flat indexes on the CPU (the default install);
``numpy``      chunked matrix products and ``argpartition``.

All are exact; neighbours whose similarities tie are ordered by database index whatever the
backend (though which tied rows make the cut at the k-th place may differ). Similarities
are float32. Under ``metric="euclidean"`` the similarity is the negated distance ``-||q - x||``
so that "larger is nearer" holds for every metric.

Precision: cosine and euclidean searches rank by squared distances between rows centred on the
database mean, ``||(q - m) - (x - m)||²`` (for unit rows ``cos = 1 - ||q - x||²/2``), not by
raw inner products. In float32 an inner product of unit vectors carries an error near
``sqrt(D)·2⁻²⁴`` (about 6e-7 at D = 100), which is larger than ``1 - cos`` of close neighbours
when all rows point almost the same way (a tight cluster, or data far from the origin): ranked
by inner products their order would be noise. Centred differences keep the relative precision
of the distances themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from probekit.accelerators import (
    current_cuda_device,
    import_faiss,
    import_torch,
    nvidia_device_present,
)
from probekit.arrays import float32_limit, row_blocks, row_chunks, to_float32, unit_rows
from probekit.errors import InputError, install_hint

METRICS = ("cosine", "euclidean", "ip")
BACKENDS = ("auto", "faiss-cpu", "faiss-gpu", "torch", "numpy")
_QUERY_CHUNK = 16384  # queries per faiss call; bounds the result buffers and paces progress
_SCORE_ELEMENTS = 1 << 25  # 128 MiB of float32 similarities per numpy/torch block

Counter = Callable[[int, int], None]
"""``counter(done, total)``: called as the queries of one search are done (the orchestration
wraps it into its stage-aware ``Progress``)."""


@dataclass(frozen=True)
class Neighbours:
    """Result of :func:`search`.

    Attributes
    ----------
    similarities : (n_queries, k) float32, each row sorted in decreasing order.
    indices : (n_queries, k) int64 database row of each neighbour.
    backend : the backend that ran the search.
    """

    similarities: np.ndarray
    indices: np.ndarray
    backend: str


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"unknown metric '{metric}': choose one of {', '.join(METRICS)}")
    return metric


def prepare_vectors(X: np.ndarray, rows: np.ndarray | None = None, *, metric: str,
                    name: str = "embeddings") -> np.ndarray:
    """A float32 copy of ``X`` (or ``X[rows]``) ready for :func:`search`: rows L2-normalised
    (in float64, so any finite magnitude works) for ``metric="cosine"``, unchanged otherwise.

    Raises :class:`InputError` for what the search cannot represent (see
    :func:`check_representable`): zero rows under cosine, magnitudes beyond float32's range
    under euclidean and ip.
    """
    check_metric(metric)
    if metric == "cosine":
        vectors = unit_rows(X, rows)
        zero_rows = int(np.count_nonzero(~vectors.any(axis=1)))
        if zero_rows:
            raise InputError(_zero_rows_message(zero_rows, vectors.shape[0], name))
        return vectors
    check_representable(X, rows, metric=metric, name=name)
    return to_float32(X, rows)


FLOAT32_SMALLEST = 1e-15  # below this largest magnitude, squared distances near float32's floor


def check_representable(X: np.ndarray, rows: np.ndarray | None = None, *, metric: str,
                        name: str = "embeddings") -> None:
    """Raise :class:`InputError` when the search could not compute with ``X`` (or ``X[rows]``)
    faithfully; one streamed pass.

    Under cosine every non-zero row has a direction (normalised in float64), so only all-zero
    rows fail. Euclidean and inner-product searches run in float32: rows holding a value above
    :func:`float32_limit` would overflow, and data whose largest magnitude is below
    :data:`FLOAT32_SMALLEST` (but not zero) would lose its distances to float32's underflow.
    Both are refused with one line naming how many rows, never computed into a wrong number.
    """
    check_metric(metric)
    limit = float32_limit(X.shape[1])
    zero_rows = huge_rows = 0
    largest = 0.0
    for start, stop, block in row_blocks(X, rows):
        magnitude = np.abs(np.asarray(block, dtype=np.float64)).max(axis=1) \
            if X.shape[1] else np.zeros(stop - start)
        zero_rows += int(np.count_nonzero(magnitude == 0))
        huge_rows += int(np.count_nonzero(magnitude > limit))
        largest = max(largest, float(magnitude.max(initial=0.0)))
    total = X.shape[0] if rows is None else len(rows)
    if metric == "cosine":
        if zero_rows:
            raise InputError(_zero_rows_message(zero_rows, total, name))
        return
    if huge_rows:
        raise InputError(
            f"{name}: {huge_rows} of {total} rows hold values above {limit:.3g} in "
            f"magnitude, too large for the float32 search under metric '{metric}' (squared "
            "distances would overflow); rescale the embeddings or use --metric cosine")
    if 0 < largest < FLOAT32_SMALLEST:
        raise InputError(
            f"{name}: the largest value is {largest:.3g}, too small for the float32 search "
            f"under metric '{metric}' (squared distances would underflow); rescale the "
            "embeddings or use --metric cosine")


def _zero_rows_message(count: int, total: int, name: str) -> str:
    return (f"{name}: {count} of {total} rows are all zeros; cosine similarity is undefined for "
            "them (drop them or use --metric euclidean)")


def available_backends() -> list[str]:
    """Backends that can run on this machine, best first (torch on CUDA before faiss-cpu,
    torch on a CPU after it). Imports torch to find out."""
    faiss = import_faiss()
    torch = import_torch()
    cuda = torch is not None and nvidia_device_present() and torch.cuda.is_available()
    found = ["faiss-gpu"] if _faiss_gpu_usable(faiss) else []
    found += ["torch"] if cuda else []
    found += ["faiss-cpu"] if faiss is not None else []
    found += ["torch"] if torch is not None and not cuda else []
    return found + ["numpy"]


def _faiss_gpu_usable(faiss) -> bool:
    """A faiss build with GPU support and a GPU; the cheap device check comes first (faiss's
    own GPU count can abort the process on a machine with the GPU build and no driver)."""
    return (faiss is not None and hasattr(faiss, "StandardGpuResources")
            and nvidia_device_present() and faiss.get_num_gpus() > 0)


def _available(name: str) -> bool:
    """Whether the one backend ``name`` can run (torch is imported only when it is asked)."""
    if name == "faiss-cpu":
        return import_faiss() is not None
    if name == "faiss-gpu":
        return _faiss_gpu_usable(import_faiss())
    if name == "torch":
        return import_torch() is not None
    return name == "numpy"


def resolve_backend(backend: str = "auto") -> str:
    """The concrete backend ``backend`` names; ``"auto"`` picks the best available one, except
    that torch on a CPU is only used when asked for by name. Torch is imported only for the
    torch backend or, by ``"auto"``, on a machine with an NVIDIA device (importing it costs
    seconds)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown search backend '{backend}': choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        faiss = import_faiss()
        if _faiss_gpu_usable(faiss):
            return "faiss-gpu"
        if nvidia_device_present():
            torch = import_torch()
            if torch is not None and torch.cuda.is_available():
                return "torch"
        return "faiss-cpu" if faiss is not None else "numpy"
    if not _available(backend):
        extra = {"faiss-cpu": "pip install faiss-cpu", "faiss-gpu": f"{install_hint('gpu')} "
                 "on a machine with a CUDA GPU", "torch": install_hint("tuner")}[backend]
        raise InputError(f"search backend '{backend}' is not available here ({extra})")
    return backend


def search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    metric: str = "cosine",
    exclude_self: bool = False,
    backend: str = "auto",
    progress: Counter | None = None,
) -> Neighbours:
    """Exact k nearest neighbours of every query row in ``database``.

    Parameters
    ----------
    queries, database : float32 arrays from :func:`prepare_vectors` (same ``metric``).
    k : number of neighbours, ``1 <= k <= len(database)`` (``< len`` with ``exclude_self``).
    metric : ``"cosine"`` (inner product of normalised rows), ``"ip"`` or ``"euclidean"``.
    exclude_self : ``queries`` and ``database`` are the same rows; row ``i``'s own entry is
        removed by index (not by position), so exact duplicates of a query stay its neighbours.
    backend : one of :data:`BACKENDS`.
    progress : called as ``progress(done, total)`` after each chunk of queries.
    """
    check_metric(metric)
    n_db = database.shape[0]
    if queries.shape[1] != database.shape[1]:
        raise InputError(
            f"queries have {queries.shape[1]} dimensions but the database has {database.shape[1]}"
        )
    limit = n_db - 1 if exclude_self else n_db
    if not 1 <= k <= limit:
        raise InputError(f"k={k} neighbours asked of {limit} candidates")
    if exclude_self and queries.shape[0] != n_db:
        raise InputError("exclude_self needs the queries to be the database rows")
    name = resolve_backend(backend)
    k_search = k + 1 if exclude_self else k
    shift = None
    if metric != "ip":  # rank by distances of centred rows (see the module docstring)
        shift = database.mean(axis=0, dtype=np.float64).astype(np.float32)
    runner = {"faiss-cpu": _search_faiss, "faiss-gpu": _search_faiss,
              "torch": _search_torch, "numpy": _search_numpy}[name]
    scores, idx = runner(queries, database, k_search, "ip" if shift is None else "euclidean",
                         shift, name, progress)
    # one order for every backend: score descending, ties by database index; the scores are
    # inner products (ip) or -||q - x||^2, sorted before they become similarities, whose
    # float32 rounding near 1 (cosine) would otherwise turn close neighbours into ties
    if (idx < 0).any():  # faiss marks neighbours it could not score (NaN/inf) with -1
        raise InputError(f"the search could not score every candidate (non-finite similarities "
                         f"for {int(np.count_nonzero((idx < 0).any(axis=1)))} queries)")
    order = np.lexsort((idx, -scores), axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    if metric == "euclidean":
        sims = -np.sqrt(np.maximum(-scores, 0.0))
    elif metric == "cosine":  # unit rows: cos = 1 - ||q - x||^2 / 2
        sims = np.clip(1.0 + 0.5 * scores, -1.0, 1.0)
    else:
        sims = scores
    if exclude_self:
        sims, idx = _drop_self(sims, idx)
    return Neighbours(np.ascontiguousarray(sims, np.float32), idx.astype(np.int64), name)


def _drop_self(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (row i is query i); rows where it was not returned (more
    exact duplicates than k) lose their last entry instead."""
    n, width = idx.shape
    keep = idx != np.arange(n)[:, None]
    no_self = keep.all(axis=1)
    keep[no_self, width - 1] = False
    return sims[keep].reshape(n, width - 1), idx[keep].reshape(n, width - 1)


# Each runner returns (scores, indices), rows sorted nearest first, where the score is the inner
# product for "ip" and the negated squared distance -||q - x||^2 for "euclidean"; ``shift``
# (None for "ip") is subtracted from queries and database rows, block by block, before any
# product, so the database is never copied whole (faiss keeps its own copy anyway).


def _centred(block: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    block = np.asarray(block, dtype=np.float32)
    return np.ascontiguousarray(block if shift is None else block - shift)


def _search_faiss(queries, database, k, metric, shift, name, progress):
    faiss = import_faiss()
    dim = database.shape[1]
    index = faiss.IndexFlatL2(dim) if metric == "euclidean" else faiss.IndexFlatIP(dim)
    if name == "faiss-gpu":
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, current_cuda_device(), index)
    for start, stop in row_chunks(*database.shape):
        index.add(_centred(database[start:stop], shift))
    n = queries.shape[0]
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _QUERY_CHUNK):
        stop = min(n, start + _QUERY_CHUNK)
        sims[start:stop], idx[start:stop] = index.search(_centred(queries[start:stop], shift), k)
        if progress:
            progress(stop, n)
    if metric == "euclidean":
        sims = -sims  # faiss gives squared distances
    return sims, idx


def _search_numpy(queries, database, k, metric, shift, name, progress):
    n, n_db = queries.shape[0], database.shape[0]
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    database = _centred(database, shift)
    db_sq = np.einsum("ij,ij->i", database, database) if metric == "euclidean" else None
    for start, stop in row_chunks(n, n_db, _SCORE_ELEMENTS):
        block = _centred(queries[start:stop], shift)
        scores = block @ database.T
        if metric == "euclidean":  # maximise -||x||^2 + 2 q.x  (the query norm is a constant)
            scores = 2.0 * scores - db_sq[None, :]
        if k < n_db:
            top = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
        else:
            top = np.broadcast_to(np.arange(n_db), scores.shape).copy()
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(top, order, axis=1)
        sims[start:stop] = np.take_along_axis(top_scores, order, axis=1)
        if metric == "euclidean":
            sims[start:stop] -= np.einsum("ij,ij->i", block, block)[:, None]
        if progress:
            progress(stop, n)
    return sims, idx


def _search_torch(queries, database, k, metric, shift, name, progress):
    torch = import_torch()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, n_db = queries.shape[0], database.shape[0]
    db = torch.from_numpy(np.ascontiguousarray(database, dtype=np.float32)).to(device)
    offset = None if shift is None else torch.from_numpy(shift).to(device)
    if offset is not None:
        db = db - offset
    db_sq = (db * db).sum(1) if metric == "euclidean" else None
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    step = max(1, _SCORE_ELEMENTS // n_db)
    start = 0
    while start < n:
        stop = min(n, start + step)
        try:
            q = torch.from_numpy(np.ascontiguousarray(queries[start:stop],
                                                      dtype=np.float32)).to(device)
            if offset is not None:
                q = q - offset
            scores = q @ db.T
            if metric == "euclidean":
                scores = 2.0 * scores - db_sq[None, :] - (q * q).sum(1, keepdim=True)
            values, positions = torch.topk(scores, k, dim=1, largest=True, sorted=True)
        except torch.cuda.OutOfMemoryError:
            if step == 1:
                raise
            step = max(1, step // 2)  # halve the block and retry; memory is the usual complaint
            torch.cuda.empty_cache()
            continue
        sims[start:stop] = values.cpu().numpy()
        idx[start:stop] = positions.cpu().numpy()
        start = stop
        if progress:
            progress(stop, n)
    return sims, idx
