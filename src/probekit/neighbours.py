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

Approximate search (``method``, a :class:`SearchMethod`): faiss's inverted-file index
(``"ivf"``: k-means lists, ``nprobe`` of them scanned per query) or its HNSW graph
(``"hnsw"``), both over the same centred rows, so their neighbours are ranked by the same
distances as the exact ones; they only may miss some. How many they miss is measured, never
assumed: :func:`recall_at_k` against an exact search of a seeded sample of the queries
(:func:`sample_queries`), which is what the probes report next to every approximate number.
Approximate indexes are built deterministically (a seeded training sample for the IVF
k-means; HNSW inserted on one thread), so the same inputs give the same neighbours.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from probekit.accelerators import (
    cuda_available,
    current_cuda_device,
    faiss_gpu_works,
    import_faiss,
    import_torch,
    nvidia_device_present,
)
from probekit.arrays import (
    PREPARE_ELEMENTS,
    float32_limit,
    normalised_rows_of,
    row_blocks,
    row_chunks,
    to_float32,
    unit_rows,
)
from probekit.errors import InputError, install_hint
from probekit.ranks import SINGLE, Ranks

METRICS = ("cosine", "euclidean", "ip")
BACKENDS = ("auto", "faiss-cpu", "faiss-gpu", "torch", "numpy")
METHODS = ("exact", "ivf", "hnsw")
FAISS_GPU_MAX_K = 2048  # faiss-gpu's flat and IVF searches take k (and nprobe) up to this
RECALL_QUERIES = 1000  # queries of the exact search that measures an approximation's recall
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
    method: dict = field(default_factory=lambda: {"name": "exact"})


@dataclass(frozen=True)
class SearchMethod:
    """How :func:`search` finds neighbours: exactly, or through an approximate faiss index.

    Attributes
    ----------
    name : ``"exact"`` (default), ``"ivf"`` (``IndexIVFFlat``) or ``"hnsw"``
        (``IndexHNSWFlat``; CPU only).
    nlist : IVF lists; None: ``DEFAULT_NLIST_FACTOR·sqrt(N)``, at most ``N / 39`` so that
        k-means has 39 training rows per list. (faiss's guideline, 4-16·sqrt(N), is for
        few queries against a large index; a probe sends N/4 queries, and the k-means training
        costs ``train_per_list · nlist² · D`` per iteration, so fewer lists pay off.)
    nprobe : IVF lists scanned per query; None: :data:`DEFAULT_NPROBE_SHARE` of the lists, at
        least :data:`DEFAULT_NPROBE_MIN`.
    train_per_list : rows of the seeded k-means training sample per list (faiss's own
        default samples up to 256; 64 costs a quarter and loses little).
    hnsw_m : HNSW graph degree; ef_construction : HNSW build depth;
    ef_search : HNSW search depth; None: ``max(DEFAULT_EF_SEARCH, 2·k)``.
    seed : seed of the IVF training sample.
    """

    name: str = "exact"
    nlist: int | None = None
    nprobe: int | None = None
    train_per_list: int = 64
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int | None = None
    seed: int = 0

    def check(self) -> SearchMethod:
        """:class:`InputError` for an unknown name or a knob that is not a positive
        integer."""
        if self.name not in METHODS:
            raise InputError(f"unknown search method '{self.name}': choose one of "
                             f"{', '.join(METHODS)}")
        for knob in ("nlist", "nprobe", "train_per_list", "hnsw_m", "ef_construction",
                     "ef_search"):
            value = getattr(self, knob)
            if value is not None and not (isinstance(value, (int, np.integer))
                                          and not isinstance(value, bool) and value >= 1):
                raise InputError(f"{knob} must be a positive integer, got {value}")
        if self.train_per_list < 39:
            raise InputError("train_per_list must be at least 39 (k-means needs 39 training "
                             f"rows per list), got {self.train_per_list}")
        return self

    @property
    def approximate(self) -> bool:
        return self.name != "exact"

    def resolved(self, n_database: int, k: int) -> dict:
        """The concrete parameters for a database of ``n_database`` rows and ``k``
        neighbours, as the report records them."""
        if self.name == "ivf":
            nlist = self.nlist or int(round(DEFAULT_NLIST_FACTOR * np.sqrt(n_database)))
            nlist = max(1, min(nlist, n_database // 39 or 1))
            nprobe = self.nprobe or max(DEFAULT_NPROBE_MIN,
                                        int(np.ceil(DEFAULT_NPROBE_SHARE * nlist)))
            return {"name": "ivf", "nlist": nlist, "nprobe": min(nprobe, nlist),
                    "train_rows": min(n_database, nlist * self.train_per_list),
                    "seed": self.seed}
        if self.name == "hnsw":
            return {"name": "hnsw", "M": self.hnsw_m, "ef_construction": self.ef_construction,
                    "ef_search": self.ef_search or max(DEFAULT_EF_SEARCH, 2 * k)}
        return {"name": "exact"}


DEFAULT_NLIST_FACTOR = 1.0
DEFAULT_NPROBE_SHARE = 1 / 32
DEFAULT_NPROBE_MIN = 16
DEFAULT_EF_SEARCH = 256


def search_method(method: SearchMethod | str | None) -> SearchMethod:
    """A checked :class:`SearchMethod` from a method or its name (None: exact)."""
    if method is None:
        return SearchMethod()
    if isinstance(method, str):
        return SearchMethod(name=method).check()
    if not isinstance(method, SearchMethod):
        raise InputError(f"search method must be a name or a SearchMethod, got {method!r}")
    return method.check()


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


class PreparedRows:
    """``X[rows]`` as :func:`prepare_vectors` would return it, computed block by block when
    read instead of held: what :func:`search` takes as its database (or queries) when a
    prepared copy would not fit in memory. Reading ``[start:stop]`` or ``[indices]`` gives the
    float32 rows bit for bit as the copy holds them (each row is prepared on its own).

    Construction checks the rows as :func:`prepare_vectors` does (one streamed pass).
    """

    def __init__(self, X: np.ndarray, rows: np.ndarray | None = None, *, metric: str,
                 name: str = "embeddings"):
        check_metric(metric)
        check_representable(X, rows, metric=metric, name=name)
        self.source, self.metric = X, metric
        self.rows = None if rows is None else np.asarray(rows)
        self.shape = (X.shape[0] if rows is None else len(self.rows), X.shape[1])
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            positions = (key if self.rows is None else self.rows[key])
        else:
            positions = np.asarray(key)
            if self.rows is not None:
                positions = self.rows[positions]
        if self.metric == "cosine":
            return normalised_rows_of(self.source, positions)
        return np.asarray(self.source[positions], dtype=np.float32)

    def take(self, rows: np.ndarray) -> PreparedRows:
        """The rows ``rows`` of these rows, still prepared on reading."""
        view = object.__new__(PreparedRows)
        view.source, view.metric, view.dtype = self.source, self.metric, self.dtype
        view.rows = np.asarray(rows) if self.rows is None else self.rows[np.asarray(rows)]
        view.shape = (len(view.rows), self.shape[1])
        return view

    def copy(self) -> np.ndarray:
        """The prepared rows in memory (:func:`prepare_vectors`)."""
        return prepare_vectors(self.source, self.rows, metric=self.metric)


def prepared_rows(X: np.ndarray, rows: np.ndarray | None = None, *, metric: str,
                  memory_budget: int | None = None,
                  name: str = "embeddings") -> np.ndarray | PreparedRows:
    """``X[rows]`` prepared for the search: a float32 copy (:func:`prepare_vectors`) when it
    fits ``memory_budget`` bytes (None: always), else :class:`PreparedRows` that prepare each
    block when it is read. Both give the same search results."""
    n = X.shape[0] if rows is None else len(rows)
    if memory_budget is None or n * X.shape[1] * 4 <= memory_budget:
        return prepare_vectors(X, rows, metric=metric, name=name)
    return PreparedRows(X, rows, metric=metric, name=name)


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
    """A faiss build with GPU support whose search has been seen to run on the current CUDA
    device (:func:`probekit.accelerators.faiss_gpu_works`: the device check comes first, and
    the trial search runs in a child process, whose abort cannot kill this one)."""
    return (faiss is not None and hasattr(faiss, "StandardGpuResources")
            and faiss_gpu_works(current_cuda_device()))


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
        extra = {"faiss-cpu": "pip install faiss-cpu",
                 "faiss-gpu": "it needs a CUDA GPU and a GPU build of faiss, such as "
                 "faiss-cuda-cu128, installed in place of faiss-cpu, whose trial search passes",
                 "torch": install_hint("gpu")}[backend]
        raise InputError(f"search backend '{backend}' is not available here ({extra})")
    return backend


def search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    *,
    metric: str = "cosine",
    exclude_self: bool = False,
    self_indices: np.ndarray | None = None,
    backend: str = "auto",
    method: SearchMethod | str | None = None,
    progress: Counter | None = None,
    ranks: Ranks = SINGLE,
) -> Neighbours:
    """The k nearest neighbours of every query row in ``database``: exact by default,
    approximate through a faiss index when ``method`` says so.

    Parameters
    ----------
    queries, database : float32 arrays from :func:`prepare_vectors` (same ``metric``).
    k : number of neighbours, ``1 <= k <= len(database)`` (``< len`` with ``exclude_self``).
    metric : ``"cosine"`` (inner product of normalised rows), ``"ip"`` or ``"euclidean"``.
    exclude_self : ``queries`` and ``database`` are the same rows; row ``i``'s own entry is
        removed by index (not by position), so exact duplicates of a query stay its neighbours.
    self_indices : the database row of each query, removed from its neighbours as
        ``exclude_self`` does (for a sample of the database's rows used as queries).
    backend : one of :data:`BACKENDS`. faiss-gpu takes k up to :data:`FAISS_GPU_MAX_K`; a
        larger k runs on torch (CUDA) or faiss-cpu instead, and ``backend`` in the result says
        which ran.
    method : exact (None, ``"exact"``) or an approximate :class:`SearchMethod`; approximate
        results are completed by an exact search for any query the index returned fewer than
        k neighbours for, and ``method`` in the result records the concrete parameters.
    progress : called as ``progress(done, total)`` after each chunk of queries.
    ranks : the processes of a sharded run (:mod:`probekit.ranks`; every rank calls with the
        same arguments). Each searches its share of the :func:`database_blocks` for every
        query, reading only those rows of ``database``; the shares' lists are merged in rank
        order (:meth:`~probekit.ranks.Ranks.pass_along`), and every rank gets exactly the
        result of one process. Exact search only.
    """
    check_metric(metric)
    how = search_method(method)
    if ranks.sharded and how.approximate:
        raise InputError(f"the approximate search ('{how.name}') runs in one process; a "
                         "sharded run (torchrun) searches exactly, each process its share "
                         "of the rows")
    n_db = database.shape[0]
    if queries.shape[1] != database.shape[1]:
        raise InputError(
            f"queries have {queries.shape[1]} dimensions but the database has {database.shape[1]}"
        )
    if exclude_self:
        if queries.shape[0] != n_db:
            raise InputError("exclude_self needs the queries to be the database rows")
        self_indices = np.arange(n_db)
    elif self_indices is not None:
        self_indices = np.asarray(self_indices, dtype=np.int64)
        if self_indices.shape != (queries.shape[0],):
            raise InputError("self_indices needs one database row per query")
    limit = n_db - 1 if self_indices is not None else n_db
    if not 1 <= k <= limit:
        raise InputError(f"k={k} neighbours asked of {limit} candidates")
    k_search = k + 1 if self_indices is not None else k
    name = resolve_backend(backend)
    if how.name == "hnsw" and name == "faiss-gpu":
        name = "faiss-cpu"  # faiss has no GPU HNSW
    if name == "faiss-gpu" and k_search > FAISS_GPU_MAX_K and not how.approximate:
        name = "torch" if _available("torch") and cuda_available() else "faiss-cpu"
    parameters = how.resolved(n_db, k_search)
    if name == "faiss-gpu" and how.approximate and max(k_search, parameters["nprobe"]) \
            > FAISS_GPU_MAX_K:
        name = "faiss-cpu"
    if how.approximate and name not in ("faiss-cpu", "faiss-gpu"):
        if import_faiss() is None:
            raise InputError(f"approximate search ('{how.name}') needs faiss "
                             "(pip install faiss-cpu)")
        name = "faiss-cpu"
    shift = None
    if metric != "ip":  # rank by distances of centred rows (see the module docstring)
        shift = database_mean(database, ranks)
    inner = "ip" if shift is None else "euclidean"
    if ranks.sharded:
        mine = ranks.share(len(database_blocks(*database.shape)))
        found = []
        ranks.agree(lambda: found.append(_search_blocks(
            queries, database, k_search, inner, shift, name, progress, numbers=mine)))
        share_scores, share_idx = found[0]  # None, None: this rank has no block

        def merge(running: list) -> None:  # in rank order, that is in the blocks' order
            if share_scores is not None:
                merge_neighbours(*running, share_scores, share_idx)

        scores, idx = ranks.pass_along(
            [np.full((len(queries), k_search), -np.inf, dtype=np.float32),
             np.full((len(queries), k_search), np.iinfo(np.int64).max, dtype=np.int64)],
            merge)
    elif how.approximate:
        scores, idx = _search_index(queries, database, k_search, inner, shift, name,
                                    parameters, progress)
        incomplete = np.flatnonzero((idx < 0).any(axis=1))
        if incomplete.size:  # too few rows in the probed lists: those queries exactly
            scores[incomplete], idx[incomplete] = _search_blocks(
                queries[incomplete], database, k_search, inner, shift, name, None)
    else:
        scores, idx = _search_blocks(queries, database, k_search, inner, shift, name, progress)
    if (idx < 0).any():  # faiss marks neighbours it could not score (NaN/inf) with -1
        raise InputError(f"the search could not score every candidate (non-finite similarities "
                         f"for {int(np.count_nonzero((idx < 0).any(axis=1)))} queries)")
    # one order for every backend: score descending, ties by database index; the scores are
    # inner products (ip) or -||q - x||^2, sorted before they become similarities, whose
    # float32 rounding near 1 (cosine) would otherwise turn close neighbours into ties
    scores, idx = sort_neighbours(scores, idx)
    if metric == "euclidean":
        sims = -np.sqrt(np.maximum(-scores, 0.0))
    elif metric == "cosine":  # unit rows: cos = 1 - ||q - x||^2 / 2
        sims = np.clip(1.0 + 0.5 * scores, -1.0, 1.0)
    else:
        sims = scores
    if self_indices is not None:
        sims, idx = _drop_self(sims, idx, self_indices)
    return Neighbours(np.ascontiguousarray(sims, np.float32), idx.astype(np.int64), name,
                      parameters)


DATABASE_BLOCK_ELEMENTS = 1 << 25  # database values (128 MiB of float32) per exact-search block


def database_blocks(n_rows: int, dim: int) -> list[tuple[int, int]]:
    """The fixed grid of row blocks in which an exact search scans its database, and in which
    :func:`database_mean` sums it: it depends on the shape alone, so a search whose database
    is split into whole blocks (among processes) computes every score exactly as one search
    does."""
    return list(row_chunks(n_rows, dim, DATABASE_BLOCK_ELEMENTS))


def database_mean(database: np.ndarray, ranks: Ranks = SINGLE) -> np.ndarray:
    """The float32 mean row of ``database``: float64 sums of the :func:`database_blocks`, added
    in block order (in a sharded run each rank sums its share of the blocks and every rank
    adds all the blocks' sums in the same order)."""
    blocks = database_blocks(*database.shape)

    def block_sums() -> list[np.ndarray]:
        return [np.asarray(database[start:stop]).sum(axis=0, dtype=np.float64)
                for start, stop in (blocks[i] for i in ranks.share(len(blocks)))]

    total = np.zeros(database.shape[1])
    for sums in ranks.agree(block_sums):
        for block_sum in sums:
            total += block_sum
    return (total / max(1, database.shape[0])).astype(np.float32)


def sort_neighbours(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row ordered by score, descending, ties by index, ascending (in place, in chunks
    of rows)."""
    for start, stop in row_chunks(*scores.shape):
        order = np.lexsort((idx[start:stop], -scores[start:stop]), axis=1)
        scores[start:stop] = np.take_along_axis(scores[start:stop], order, axis=1)
        idx[start:stop] = np.take_along_axis(idx[start:stop], order, axis=1)
    return scores, idx


def merge_neighbours(scores: np.ndarray, idx: np.ndarray, more_scores: np.ndarray,
                     more_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best ``scores.shape[1]`` of two candidate lists per row (score descending, ties by
    index), written into ``scores``/``idx``; row chunks bound the temporaries. The result does
    not depend on which list a candidate came from, so merging the blocks of a database in any
    grouping gives one answer."""
    k = scores.shape[1]
    for start, stop in row_chunks(scores.shape[0], k + more_scores.shape[1]):
        both_scores = np.concatenate([scores[start:stop], more_scores[start:stop]], axis=1)
        both_idx = np.concatenate([idx[start:stop], more_idx[start:stop]], axis=1)
        order = np.lexsort((both_idx, -both_scores), axis=1)[:, :k]
        scores[start:stop] = np.take_along_axis(both_scores, order, axis=1)
        idx[start:stop] = np.take_along_axis(both_idx, order, axis=1)
    return scores, idx


def _search_blocks(queries, database, k, metric, shift, name, progress, numbers=None):
    """The exact search, one :func:`database_blocks` block at a time (those numbered
    ``numbers``; all when None), each block's best k merged into the running lists; the
    database is never copied whole (each runner centres one block at a time, and faiss's
    index holds one block). None when there is no block to search."""
    runner = {"faiss-cpu": _search_faiss, "faiss-gpu": _search_faiss,
              "torch": _search_torch, "numpy": _search_numpy}[name]
    grid = database_blocks(*database.shape)
    blocks = [grid[i] for i in (range(len(grid)) if numbers is None else numbers)]
    scores = idx = None
    for number, (start, stop) in enumerate(blocks):
        counter = None
        if progress is not None:
            def counter(done, total, _before=number):
                progress(_before * total + done, len(blocks) * total)
        block_scores, block_idx = runner(queries, database[start:stop], min(k, stop - start),
                                         metric, shift, name, counter)
        block_idx += start
        if scores is None and block_scores.shape[1] == k:
            scores, idx = block_scores, block_idx
        elif scores is None:  # a first block with fewer than k rows (k spans blocks)
            scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
            idx = np.full((len(queries), k), np.iinfo(np.int64).max, dtype=np.int64)
            merge_neighbours(scores, idx, block_scores, block_idx)
        else:
            merge_neighbours(scores, idx, block_scores, block_idx)
    return scores, idx


def exact_search_seconds(n_queries: int, n_database: int, dim: int, *,
                         backend: str = "auto", metric: str = "cosine") -> float:
    """How long an exact search of ``n_queries`` against ``n_database`` rows of ``dim``
    dimensions would take here: one timed search of at most 1000 random queries against at
    most 50 000 random rows on the same backend, scaled by the number of (query, row) pairs
    (the flat search's cost is proportional to it). Costs well under a second."""
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((min(n_queries, 1000), dim), dtype=np.float32)
    database = rng.standard_normal((min(n_database, 50_000), dim), dtype=np.float32)
    k = min(10, len(database))
    search(queries[:10], database, k, metric=metric, backend=backend)  # warm up the backend
    start = time.perf_counter()
    search(queries, database, k, metric=metric, backend=backend)
    seconds = time.perf_counter() - start
    return seconds * (n_queries / len(queries)) * (n_database / len(database))


def sample_queries(n_queries: int, seed: int = 0, size: int = RECALL_QUERIES) -> np.ndarray:
    """Sorted seeded sample of ``min(size, n_queries)`` query rows, on which an approximate
    search is checked against the exact one."""
    if n_queries <= size:
        return np.arange(n_queries)
    return np.sort(np.random.default_rng(seed).choice(n_queries, size, replace=False))


@dataclass(frozen=True)
class ExactCheck:
    """An approximate search checked on a sample of its queries (:func:`check_against_exact`).

    Attributes
    ----------
    rows : the sampled query rows; exact : their exact neighbours;
    recall : ``{k: recall@k}`` (string keys, as the report stores them).
    """

    rows: np.ndarray
    exact: Neighbours
    recall: dict

    def summary(self, found: Neighbours, seed: int) -> dict:
        """What the report records: the method, the sample and the recall."""
        return {"method": dict(found.method), "n_queries": int(len(self.rows)),
                "seed": int(seed), "recall": dict(self.recall)}


def check_against_exact(queries: np.ndarray, database: np.ndarray, found: Neighbours,
                        depths, *, metric: str, exclude_self: bool = False,
                        backend: str = "auto", seed: int = 0,
                        size: int = RECALL_QUERIES) -> ExactCheck:
    """Search a seeded sample of ``queries`` (:func:`sample_queries`) exactly and measure the
    :func:`recall_at_k` of ``found`` (their approximate neighbours, from the same arguments)
    at every depth of ``depths`` that it holds."""
    rows = sample_queries(len(queries), seed, size)
    width = found.indices.shape[1]
    exact = search(queries[rows], database, width, metric=metric, backend=backend,
                   self_indices=rows if exclude_self else None)
    recall = {str(d): recall_at_k(found.indices[rows], exact.indices, d)
              for d in sorted(set(depths)) if 1 <= d <= width}
    return ExactCheck(rows, exact, recall)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of ``|A_k ∩ E_k| / k``: the share of each query's exact k nearest
    neighbours (``exact[:, :k]``, database indices) that the approximate list's first k
    (``approximate[:, :k]``) holds (Jégou, Douze & Schmid, "Product quantization for nearest
    neighbor search", TPAMI 2011, call it the k-recall@k, or "intersection measure").

    Ties at the k-th place can make an exact list hold one of several equally near rows; the
    approximate list holding another counts as a miss, so the value is a lower bound."""
    a, e = approximate[:, :k], exact[:, :k]
    if a.shape != e.shape:
        raise InputError("recall@k needs two neighbour lists of the same shape")
    # each list holds distinct rows, so a shared row appears twice side by side once sorted
    merged = np.sort(np.concatenate([a, e], axis=1), axis=1)
    hits = np.count_nonzero(merged[:, 1:] == merged[:, :-1], axis=1)
    return float(np.mean(hits / k))


def _drop_self(sims: np.ndarray, idx: np.ndarray,
               self_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own database index (``self_indices[i]`` for query i); rows where it
    was not returned (more exact duplicates than k, or an approximate search that missed it)
    lose their last entry instead."""
    n, width = idx.shape
    keep = idx != self_indices[:, None]
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
        index = faiss.index_cpu_to_gpu(_gpu_resources(), current_cuda_device(), index)
    for start, stop in row_chunks(*database.shape):
        index.add(_centred(database[start:stop], shift))
    return _query_index(index, queries, k, metric, shift, progress)


def _query_index(index, queries, k, metric, shift, progress):
    """The centred ``queries`` searched in a faiss ``index``, :data:`_QUERY_CHUNK` at a time:
    ``(similarities, indices)``, squared distances turned into similarities."""
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


@functools.lru_cache(maxsize=1)
def _gpu_resources():
    """One faiss ``StandardGpuResources`` (its scratch memory pool) for every GPU search of
    this process, made on first use."""
    return import_faiss().StandardGpuResources()


def _search_index(queries, database, k, metric, shift, name, parameters, progress):
    """An approximate search through a faiss IVF-Flat or HNSW-Flat index over the centred
    rows (IVF on the GPU for faiss-gpu, HNSW always on the CPU)."""
    faiss = import_faiss()
    dim = database.shape[1]
    faiss_metric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    threads = faiss.omp_get_max_threads()
    if parameters["name"] == "hnsw":
        index = faiss.IndexHNSWFlat(dim, parameters["M"], faiss_metric)
        index.hnsw.efConstruction = parameters["ef_construction"]
        faiss.omp_set_num_threads(1)  # HNSW inserts race on several threads: one, for one graph
        try:
            for start, stop in row_chunks(*database.shape):
                index.add(_centred(database[start:stop], shift))
        finally:
            faiss.omp_set_num_threads(threads)
        index.hnsw.efSearch = parameters["ef_search"]
    else:
        quantizer = (faiss.IndexFlatL2(dim) if metric == "euclidean"
                     else faiss.IndexFlatIP(dim))
        index = faiss.IndexIVFFlat(quantizer, dim, parameters["nlist"], faiss_metric)
        if name == "faiss-gpu":
            index = faiss.index_cpu_to_gpu(_gpu_resources(), current_cuda_device(), index)
        if hasattr(index, "cp"):
            index.cp.seed = parameters["seed"]  # k-means' initial centroids
        training = np.sort(np.random.default_rng(parameters["seed"]).choice(
            database.shape[0], parameters["train_rows"], replace=False))
        index.train(_centred(database[training], shift))
        if name != "faiss-gpu":  # on the CPU, the lists are scanned by matrix products
            centroids = index.quantizer if hasattr(index, "quantizer") else quantizer
            return _search_lists(queries, database, k, metric, shift, centroids,
                                 parameters["nprobe"], progress)
        for start, stop in row_chunks(*database.shape):
            index.add(_centred(database[start:stop], shift))
        index.nprobe = parameters["nprobe"]
    sims, idx = _query_index(index, queries, k, metric, shift, progress)
    sims[idx < 0] = -np.inf
    return sims, idx




def _search_lists(queries, database, k, metric, shift, quantizer, nprobe, progress):
    """The inverted-file search of faiss's ``IndexIVFFlat`` (each query scans the rows of its
    ``nprobe`` nearest lists exactly) computed list by list with matrix products.

    faiss scans a list for one query at a time, at about a tenth of the speed of a matrix
    product on a CPU. A probe sends many queries at once, so here the lists are visited one
    by one, each meeting every query that probes it in one matrix product (scores
    ``-||q - x||²`` as ``2 q·x - ||x||² - ||q||²``, the numpy backend's formula, or ``q·x``),
    and each query's running best ``k`` are merged with the list's best (which of several
    candidates tied at the ``k``-th place stays is left to the selection: this is an
    approximate search; :func:`search` orders what is kept).
    The rows are read sorted by list, a group of consecutive lists at a time
    (:data:`LIST_GROUP_ELEMENTS` values at most, unless one list is larger), so the scan holds
    a bounded part of the database, not a copy of it as faiss's index does. The candidates
    are those of ``IndexIVFFlat`` with the same centroids and
    ``nprobe``; queries whose probed lists hold fewer than ``k`` rows keep -1 placeholders
    (completed by :func:`search`).
    """
    n_db, dim = database.shape
    assigned = np.empty(n_db, dtype=np.int64)
    for start, stop in row_chunks(n_db, dim):
        assigned[start:stop] = quantizer.search(_centred(database[start:stop], shift), 1)[1][:, 0]
    order = np.argsort(assigned, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(assigned, minlength=quantizer.ntotal))])
    del assigned
    n = queries.shape[0]
    probed = np.empty((n, nprobe), dtype=np.int64)
    for start, stop in row_chunks(n, dim):
        probed[start:stop] = quantizer.search(_centred(queries[start:stop], shift), nprobe)[1]
    pairs = np.argsort(probed.ravel(), kind="stable")  # (query, probe) pairs grouped by list
    lists = probed.ravel()[pairs]
    del probed
    cuts = np.searchsorted(lists, np.arange(len(bounds)))  # pairs of list l: cuts[l]:cuts[l+1]
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    for group in _list_groups(bounds, dim):
        # the centred rows of a group of consecutive lists, sorted by list
        first_row = int(bounds[group.start])
        rows = _sorted_rows(database, order[first_row:int(bounds[group.stop])], shift)
        norms = np.einsum("ij,ij->i", rows, rows) if metric == "euclidean" else None
        for number in group:
            low, high = int(bounds[number]), int(bounds[number + 1])
            who = pairs[cuts[number]:cuts[number + 1]] // nprobe  # the queries that probe it
            if high == low or not len(who):
                continue
            members = rows[low - first_row:high - first_row]
            step = max(1, _SCORE_ELEMENTS // (high - low))
            for start in range(0, len(who), step):
                some = who[start:start + step]
                chunk = _centred(queries[some], shift)
                products = chunk @ members.T
                if metric == "euclidean":  # -||q - x||^2 up to the query's own ||q||^2
                    products *= 2.0
                    products -= norms[low - first_row:high - first_row]
                    products -= np.einsum("ij,ij->i", chunk, chunk)[:, None]
                width = min(k, high - low)
                top = np.argpartition(-products, width - 1, axis=1)[:, :width] \
                    if width < high - low else np.broadcast_to(np.arange(width), products.shape)
                both = np.concatenate([sims[some], np.take_along_axis(products, top, axis=1)],
                                      1)
                both_idx = np.concatenate([idx[some], order[low + top]], axis=1)
                best = np.argpartition(-both, k - 1, axis=1)[:, :k]  # ties at the cut: any
                sims[some] = np.take_along_axis(both, best, axis=1)
                idx[some] = np.take_along_axis(both_idx, best, axis=1)
            if progress:
                progress(int(cuts[number + 1]) * n // max(1, len(pairs)), n)
    return sims, idx


LIST_GROUP_ELEMENTS = 1 << 25  # values of the sorted rows held at once by the IVF scan (128 MiB)


def _list_groups(bounds: np.ndarray, dim: int) -> list[range]:
    """Consecutive lists whose rows together hold at most :data:`LIST_GROUP_ELEMENTS` values
    (a larger list alone), so the IVF scan holds a bounded part of the database at a time."""
    most = max(1, LIST_GROUP_ELEMENTS // max(1, dim))  # rows
    n_lists = len(bounds) - 1
    groups, first = [], 0
    for last in range(n_lists):  # would list `last` overfill the group [first, last)?
        if last > first and int(bounds[last + 1]) - int(bounds[first]) > most:
            groups.append(range(first, last))
            first = last
    if first < n_lists:
        groups.append(range(first, n_lists))
    return groups


def _sorted_rows(database, wanted: np.ndarray, shift) -> np.ndarray:
    """The centred float32 rows ``database[wanted]`` in the order of ``wanted``, read in
    ascending row order, block by block."""
    rows = np.empty((len(wanted), database.shape[1]), dtype=np.float32)
    for start, stop in row_chunks(len(wanted), database.shape[1], PREPARE_ELEMENTS):
        part = wanted[start:stop]
        ascending = np.sort(part)  # read the source in order, then put the rows in place
        rows[start:stop] = _centred(database[ascending], shift)[np.searchsorted(ascending,
                                                                                 part)]
    return rows


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
