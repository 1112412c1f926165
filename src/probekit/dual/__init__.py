"""``dual_probe``: the linear probe and the kNN probe on one split, read together.

Orchestration only: every option is checked once at the door (:class:`~.common.Options`, for
both routes), the arrays are checked (:func:`~.common.check_inputs`), and then one of two routes
runs: :mod:`.classes` (one label per sample) or :mod:`.tags` (an (N, C) matrix of tags). Both
run the two probes on the same train/test rows, bootstrap every score with the same resamples,
time their stages with one clock and assemble the :class:`~probekit.report.Report` with one
builder (:func:`~.common.build_report`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from probekit.dual.classes import dual_probe_of_classes
from probekit.dual.common import Options, Progress
from probekit.dual.tags import dual_probe_of_tags
from probekit.errors import InputError
from probekit.neighbours import SearchMethod, search_method
from probekit.probes.knn import DEFAULT_K, DEFAULT_TEMPERATURE
from probekit.probes.linear import DEFAULT_C_GRID, DEFAULT_MAX_ITER, DEFAULT_TOL, DEFAULT_VAL_SIZE
from probekit.probes.standard import DEFAULT_MEMORY_BUDGET
from probekit.ranks import SINGLE, Ranks
from probekit.report import Report

__all__ = ["Options", "Progress", "dual_probe"]


def dual_probe(
    X,
    y,
    *,
    X_test=None,
    y_test=None,
    k: Iterable[int] = DEFAULT_K,
    metric: str = "cosine",
    temperature: float = DEFAULT_TEMPERATURE,
    loo: bool = False,
    C: Iterable[float] = DEFAULT_C_GRID,
    val_size: float = DEFAULT_VAL_SIZE,
    test_size: float = 0.2,
    folds: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    search: str | SearchMethod = "exact",
    linear_backend: str = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    n_bootstrap: int = 1000,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    geometry: bool = True,
    geometry_sample: int = 5000,
    extra: Iterable[str] = (),
    projection: bool = False,
    save_predictions: bool = False,
    tags: Iterable[str] | None = None,
    progress: Progress | None = None,
    ranks: Ranks | None = None,
) -> Report:
    """Linear and kNN probes of an embedding space, on the same split, in one report.

    Parameters
    ----------
    X : (N, D) embeddings (array or memory map); y : (N,) labels, ints or strings, or an
        (N, C) 0/1 matrix of tags for multi-label data (then the tag probes of
        :mod:`probekit.probes.multilabel`, scored by mAP, ROC-AUC, d′ and F1; a given test set
        or a random holdout).
    X_test, y_test : a given test split (the paper's setting). Without it, a stratified holdout
        of ``test_size`` is made, or stratified k-fold with ``folds``.
    k : k values of the kNN probe (those above the training size are dropped with a warning).
    metric : ``"cosine"`` (default), ``"euclidean"`` or ``"ip"`` for the kNN probe.
    temperature : T of the weighted vote ``exp(s / T)``.
    loo : the kNN probe classifies every one of the N samples by all the others (leave-one-out)
        instead of using the split; the linear probe still uses the holdout split.
    C : grid of inverse regularisation strengths of the linear probe.
    val_size : fraction of train held out (stratified) to choose C.
    test_size : test fraction of the holdout split.
    folds : number of stratified folds (mean ± std across folds; CI over pooled predictions).
    seed : seeds the split, the validation split and the bootstrap.
    backend : neighbour-search backend (see :mod:`probekit.neighbours`).
    search : ``"exact"`` (default), ``"ivf"`` or ``"hnsw"``, or a
        :class:`~probekit.neighbours.SearchMethod` with its knobs: the kNN search, and so the
        geometry's neighbour graph. An approximate search is checked against the exact one on
        a seeded sample of 1000 queries: the report's ``knn["approximation"]`` holds the
        recall@k and the accuracy on that sample both ways.
    linear_backend : ``"auto"`` (default: torch on a CUDA GPU, numpy otherwise), ``"numpy"`` or
        ``"torch"`` (see :mod:`probekit.probes.logistic`); the same objective and C sweep.
    memory_budget : bytes the probes may hold in a copy of rows (default 1 GiB): the kNN
        search's prepared test rows (the queries) and the linear probe's standardised training
        rows are each copied only when they fit; otherwise rows are prepared again from ``X``
        block by block (the same numbers). The training rows are never copied for the search
        or the geometry.
    n_bootstrap : bootstrap resamples of every accuracy CI.
    max_iter, tol : L-BFGS limits of each logistic-regression fit.
    geometry : add the geometry diagnostics (:func:`probekit.diagnose`) of the training rows,
        reusing the kNN probe's neighbour graph (test queries -> train, or the leave-one-out
        graph); under k-fold, of the first fold.
    geometry_sample : query sample of the pairwise diagnostics; extra : opt-in diagnostics.
    projection : also make the 2-D map of the figures (UMAP with the ``umap`` extra, else
        PCA; see :func:`probekit.geometry.projection.project_2d`).
    save_predictions : keep every test sample's correctness for each probe and setting in
        ``Report.arrays`` (saved in the ``.npz`` sidecar), so that two runs on the same test
        set can be compared with paired tests (:meth:`Report.compare`).
    tags : names of the tag columns of multi-label ``y`` (default ``0..C-1``).
    progress : called as ``progress(stage, done, total)`` during long steps.
    ranks : the processes of a sharded run under ``torchrun`` (:func:`probekit.ranks.start`;
        every process calls ``dual_probe`` with the same arguments): each searches its share
        of the training rows and sums the linear probe's objective over its share, and every
        process gets the numbers one process computes (exact search only). The geometry and
        the 2-D map are computed by rank 0 alone, which writes the outputs. None: this process
        alone.

    Returns
    -------
    Report
    """
    options = Options(
        k=tuple(k) if isinstance(k, Iterable) else (k,), metric=metric,
        temperature=temperature, loo=loo, C=tuple(C) if isinstance(C, Iterable) else (C,),
        val_size=val_size, test_size=test_size, folds=folds, seed=seed, backend=backend,
        search=search_method(search), linear_backend=linear_backend,
        memory_budget=memory_budget, n_bootstrap=n_bootstrap, max_iter=max_iter, tol=tol,
        geometry=geometry, geometry_sample=geometry_sample, extra=tuple(extra),
        projection=projection, save_predictions=save_predictions).check()
    ranks = SINGLE if ranks is None else ranks
    if ranks.sharded and options.search.approximate:
        raise InputError(f"the approximate search ('{options.search.name}') runs in one "
                         "process; a sharded run (torchrun) searches exactly, each process its "
                         "share of the training rows")
    if _is_tag_matrix(y) or _is_tag_matrix(y_test):
        return dual_probe_of_tags(X, y, X_test, y_test, tags, options, progress, ranks)
    return dual_probe_of_classes(X, y, X_test, y_test, options, progress, ranks)


def _is_tag_matrix(labels) -> bool:
    """An (N, C) label matrix with C > 1: multi-label tags."""
    return labels is not None and np.ndim(labels) == 2 and np.shape(labels)[1] > 1
