"""The kNN probe: how well does local neighbourhood structure predict the class?

One search for the ``k_max`` nearest training neighbours of every query (exact by default, or
approximate with its recall measured: :func:`approximation_check`), then the votes for every
``k`` in the list from that single neighbour table (the first ``k`` columns):

majority  each neighbour casts one vote; ties go to the tied class that holds the nearest
          neighbour (scikit-learn's ``KNeighborsClassifier`` breaks them by class index
          instead, so the two agree wherever there is no tie);
weighted  neighbour j votes with ``w_j = exp(s_j / T)`` (Wu et al. 2018, DINO's ``eval_knn``,
          T = 0.07). The weights are computed as ``exp((s_j - s_1) / T)``, the same ratios
          without overflow; remaining exact ties follow the majority rule.

References
----------
Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018. Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers" (DINO), ICCV 2021.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from probekit import neighbours
from probekit.errors import InputError
from probekit.labels import encode_labels
from probekit.probes.metrics import ClassificationScores, bootstrap_ci, classification_scores
from probekit.ranks import SINGLE, Ranks
from probekit.validate import check_dataset, check_same_dimensions

DEFAULT_K = (1, 5, 10, 20, 50, 100)
DEFAULT_TEMPERATURE = 0.07
VOTES = ("majority", "weighted")
# the fixed setting the report's reading compares with the linear probe: chosen in advance (the
# best setting is chosen on the test set, so comparing with it would favour kNN)
READING_VOTE = "weighted"
READING_K = 20
_VOTE_ELEMENTS = 1 << 22  # query x class cells per block of the vote tables


@dataclass(frozen=True)
class KNNPredictions:
    """Predicted class codes for every vote and k.

    Attributes
    ----------
    k : the k values, ascending.
    predictions : vote -> (len(k), n_queries) int64 predicted codes.
    true_rank : vote -> (len(k), n_queries) 0-based rank of the true class in the vote's
        ordering (``inf`` where no neighbour carries it); ``None`` without true labels.
    backend : the neighbour-search backend that ran.
    graph : the neighbour table of the one search (reused by the geometry diagnostics).
    """

    k: tuple[int, ...]
    predictions: dict[str, np.ndarray]
    true_rank: dict[str, np.ndarray] | None
    backend: str
    graph: neighbours.Neighbours | None = field(default=None, repr=False, compare=False)
    approximation: dict | None = None
    """What an approximate search cost (:func:`approximation_check`); None when exact."""


@dataclass(frozen=True)
class KNNResult:
    """Scores of the kNN probe for every vote and k (see :func:`knn_probe`).

    ``predictions`` holds class codes; ``classes[code]`` is the label of a code (codes number
    the classes in order of first appearance in the training labels, then those only in the
    test labels).
    """

    k: tuple[int, ...]
    metric: str
    temperature: float
    loo: bool
    backend: str
    majority: dict[int, ClassificationScores]
    weighted: dict[int, ClassificationScores]
    predictions: KNNPredictions
    classes: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        votes = {vote: {str(k): getattr(self, vote)[k].to_dict() for k in self.k}
                 for vote in VOTES}
        out = {**votes, "best": best_setting(votes), "backend": self.backend}
        if self.predictions.approximation is not None:
            out["approximation"] = self.predictions.approximation
        return out


def best_setting(scores_by_vote: dict[str, dict[str, dict]]) -> dict:
    """``{"vote", "k", "accuracy"}`` of the most accurate (vote, k); on ties the smaller k, then
    the majority vote."""
    candidates = [(scores["accuracy"], -int(k), -VOTES.index(vote), vote, int(k))
                  for vote in VOTES for k, scores in scores_by_vote[vote].items()]
    accuracy, _, _, vote, k = max(candidates)
    return {"vote": vote, "k": k, "accuracy": accuracy}


def reading_k(ks: Iterable[int]) -> int:
    """The k of the fixed comparison setting: :data:`READING_K`, or the nearest available k on
    a log scale (the smaller on ties)."""
    return min(ks, key=lambda value: (abs(np.log(value / READING_K)), value))


def resolve_k(k: Iterable[int], n_candidates: int) -> tuple[tuple[int, ...], list[str]]:
    """Sorted unique k values that fit ``n_candidates`` neighbours, and a note for those that
    do not."""
    values = sorted({int(value) for value in k})
    if not values or values[0] < 1:
        raise InputError(f"k values must be positive integers, got {list(k)}")
    kept = tuple(value for value in values if value <= n_candidates)
    dropped = [value for value in values if value > n_candidates]
    if not kept:
        raise InputError(
            f"every k ({', '.join(map(str, values))}) exceeds the {n_candidates} training "
            "samples available as neighbours"
        )
    notes = []
    if dropped:
        notes.append(
            f"k={', '.join(map(str, dropped))} dropped: only {n_candidates} training samples "
            "can be neighbours"
        )
    return kept, notes


def knn_votes(
    neighbour_labels: np.ndarray,
    neighbour_similarities: np.ndarray,
    *,
    n_classes: int,
    k: tuple[int, ...],
    temperature: float = DEFAULT_TEMPERATURE,
    y_true: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Majority and weighted votes for every k from one neighbour table.

    Parameters
    ----------
    neighbour_labels : (n, k_max) class codes of each query's neighbours, nearest first.
    neighbour_similarities : (n, k_max) their similarities, non-increasing along each row.
    n_classes : number of class codes (codes are ``0..n_classes-1``).
    k : ascending k values, each at most ``k_max``.
    temperature : T of the weighted vote.
    y_true : (n,) true codes, to also return the rank of the true class.

    Returns
    -------
    predictions, true_rank : as in :class:`KNNPredictions`.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be a positive number, got {temperature}")
    n, k_max = neighbour_labels.shape
    position = {value: i for i, value in enumerate(k)}
    predictions = {vote: np.empty((len(k), n), dtype=np.int64) for vote in VOTES}
    ranks = None if y_true is None else {vote: np.empty((len(k), n)) for vote in VOTES}
    weights = np.exp(
        (neighbour_similarities.astype(np.float64) - neighbour_similarities[:, :1]) / temperature
    )
    block = max(1, _VOTE_ELEMENTS // max(1, n_classes))
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.arange(stop - start)
        counts = np.zeros((stop - start, n_classes))
        weight_sums = np.zeros((stop - start, n_classes))
        first_seen = np.full((stop - start, n_classes), k_max, dtype=np.int64)
        labels = neighbour_labels[start:stop]
        for j in range(max(k)):
            column = labels[:, j]
            counts[rows, column] += 1.0
            weight_sums[rows, column] += weights[start:stop, j]
            first_seen[rows, column] = np.minimum(first_seen[rows, column], j)
            if j + 1 not in position:
                continue
            for vote, scores in (("majority", counts), ("weighted", weight_sums)):
                predicted, rank = _rank_classes(
                    scores, first_seen, k_max, None if y_true is None else y_true[start:stop]
                )
                predictions[vote][position[j + 1], start:stop] = predicted
                if ranks is not None:
                    ranks[vote][position[j + 1], start:stop] = rank
    return predictions, ranks


def _rank_classes(scores, first_seen, k_max, y_true):
    """Winner of each row (highest score, then nearest first neighbour) and the rank of the
    true class in that order (``inf`` when no neighbour carries it)."""
    best = scores.max(axis=1, keepdims=True)
    predicted = np.where(scores == best, first_seen, k_max + 1).argmin(axis=1)
    if y_true is None:
        return predicted, None
    rows = np.arange(len(y_true))
    true_score = scores[rows, y_true][:, None]
    true_first = first_seen[rows, y_true][:, None]
    ahead = (scores > true_score) | ((scores == true_score) & (first_seen < true_first))
    rank = ahead.sum(axis=1).astype(np.float64)
    rank[true_first[:, 0] == k_max] = np.inf
    return predicted, rank


def knn_predict(
    train: np.ndarray,
    train_codes: np.ndarray,
    queries: np.ndarray | None,
    *,
    n_classes: int,
    k: tuple[int, ...],
    metric: str = "cosine",
    temperature: float = DEFAULT_TEMPERATURE,
    query_codes: np.ndarray | None = None,
    backend: str = "auto",
    method: neighbours.SearchMethod | str | None = None,
    seed: int = 0,
    progress: neighbours.Counter | None = None,
    ranks: Ranks = SINGLE,
) -> KNNPredictions:
    """Search once for ``max(k)`` neighbours and vote for every k.

    ``train`` and ``queries`` come from :func:`probekit.neighbours.prepare_vectors`;
    ``queries=None`` is leave-one-out over ``train`` (each row classified by the others).
    An approximate ``method`` is checked against exact search on a sample of the queries
    seeded by ``seed`` (:func:`approximation_check`). ``ranks``: the processes of a sharded
    run, which split the training rows of the search (:func:`probekit.neighbours.search`).
    """
    loo = queries is None
    method = neighbours.search_method(method)
    found = neighbours.search(
        train if loo else queries, train, max(k), metric=metric, exclude_self=loo,
        backend=backend, method=method, progress=progress, ranks=ranks,
    )
    predictions, ranks = knn_votes(
        train_codes[found.indices], found.similarities, n_classes=n_classes, k=k,
        temperature=temperature, y_true=query_codes,
    )
    approximation = None
    if method.approximate:
        approximation = approximation_check(
            train, train_codes, queries, found, n_classes=n_classes, k=k, metric=metric,
            temperature=temperature, query_codes=query_codes, backend=backend, seed=seed)
    return KNNPredictions(k, predictions, ranks, found.backend, found, approximation)


def approximation_check(
    train: np.ndarray,
    train_codes: np.ndarray,
    queries: np.ndarray | None,
    found: neighbours.Neighbours,
    *,
    n_classes: int,
    k: tuple[int, ...],
    metric: str,
    temperature: float = DEFAULT_TEMPERATURE,
    query_codes: np.ndarray | None = None,
    backend: str = "auto",
    seed: int = 0,
) -> dict:
    """What an approximate search cost, measured on a seeded sample of its queries
    (:func:`probekit.neighbours.sample_queries`, :data:`~probekit.neighbours.RECALL_QUERIES`
    of them, or all when fewer) searched again exactly.

    Returns ``{"method", "n_queries", "seed", "recall": {k: recall@k}}`` for every k of the
    probe and k = 1, 2, 10 (the geometry's graph depths), and with true labels ``"accuracy"``:
    the accuracy of the fixed setting (weighted vote, :func:`reading_k`) on the sample with the
    exact and with the approximate neighbours, and ``"largest_difference"``: the (vote, k)
    whose sample accuracy moved most, and by how much (approximate minus exact).
    ``queries=None`` is leave-one-out (the sample's own rows are excluded by index).
    """
    loo = queries is None
    depths = set(k) | {1, 2, 10}
    check = neighbours.check_against_exact(train if loo else queries, train, found, depths,
                                           metric=metric, exclude_self=loo, backend=backend,
                                           seed=seed)
    out = check.summary(found, seed)
    sample, exact, approximate = check.rows, check.exact, found.indices[check.rows]
    if query_codes is None:
        return out
    truth = query_codes[sample]
    votes = dict(n_classes=n_classes, k=k, temperature=temperature)
    both = {}
    for name, indices, similarities in (
            ("exact", exact.indices, exact.similarities),
            ("approximate", approximate, found.similarities[sample])):
        predicted, _ = knn_votes(train_codes[indices], similarities, **votes)
        both[name] = {vote: np.mean(predicted[vote] == truth[None, :], axis=1) for vote in VOTES}
    reading = k.index(reading_k(k))
    out["accuracy"] = {
        "vote": READING_VOTE, "k": int(k[reading]),
        "exact": float(both["exact"][READING_VOTE][reading]),
        "approximate": float(both["approximate"][READING_VOTE][reading])}
    moved = [(abs(both["approximate"][vote][i] - both["exact"][vote][i]), -i,
              -VOTES.index(vote), vote, i) for vote in VOTES for i in range(len(k))]
    _, _, _, vote, i = max(moved)
    out["largest_difference"] = {
        "vote": vote, "k": int(k[i]),
        "difference": float(both["approximate"][vote][i] - both["exact"][vote][i])}
    return out


def pooled_approximation(checks: list[dict]) -> dict:
    """One :func:`approximation_check` summary for several folds: recall and sample accuracies
    averaged with the folds' query counts as weights, queries summed, and the largest
    accuracy difference of any fold (the most one fold moved)."""
    if len(checks) == 1:
        return checks[0]
    weights = np.array([c["n_queries"] for c in checks], dtype=np.float64)
    weights /= weights.sum()

    def mean(values) -> float:
        return float(np.dot(weights, values))

    out = {**checks[0], "n_queries": int(sum(c["n_queries"] for c in checks)),
           "recall": {d: mean([c["recall"][d] for c in checks]) for d in checks[0]["recall"]}}
    if "accuracy" in checks[0]:
        out["accuracy"] = {**checks[0]["accuracy"],
                           **{way: mean([c["accuracy"][way] for c in checks])
                              for way in ("exact", "approximate")}}
        out["largest_difference"] = max((c["largest_difference"] for c in checks),
                                        key=lambda d: abs(d["difference"]))
    return out


def score_knn(
    predicted: KNNPredictions, y_true: np.ndarray, *, n_classes: int, ci95: np.ndarray
) -> dict[str, dict[int, ClassificationScores]]:
    """Scores per vote and k; ``ci95`` holds one ``[low, high]`` row per (vote, k) in the order
    of :func:`correctness_columns`."""
    scores: dict[str, dict[int, ClassificationScores]] = {}
    row = 0
    for vote in VOTES:
        scores[vote] = {}
        for i, value in enumerate(predicted.k):
            scores[vote][value] = classification_scores(
                y_true, predicted.predictions[vote][i], ci95=ci95[row],
                true_rank=predicted.true_rank[vote][i], n_classes=n_classes,
            )
            row += 1
    return scores


def correctness_columns(predicted: KNNPredictions, y_true: np.ndarray) -> np.ndarray:
    """(n, 2 * len(k)) per-sample correctness, majority k's first, then weighted."""
    return np.concatenate(
        [(predicted.predictions[vote] == y_true[None, :]).T for vote in VOTES], axis=1
    )


def knn_probe(
    X_train,
    y_train,
    X_test=None,
    y_test=None,
    *,
    k: Iterable[int] = DEFAULT_K,
    metric: str = "cosine",
    temperature: float = DEFAULT_TEMPERATURE,
    loo: bool = False,
    backend: str = "auto",
    method: neighbours.SearchMethod | str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> KNNResult:
    """kNN probe of an embedding space.

    Classifies every test row by its nearest training rows (or, with ``loo=True`` and no test
    set, every row by all the others) and scores both votes for every k.

    Parameters
    ----------
    X_train : (N, D) embeddings; y_train : (N,) labels (ints or strings).
    X_test, y_test : the test split; omit both with ``loo=True``.
    k : k values; those above the number of available neighbours are dropped with a warning.
    metric : ``"cosine"`` (default, rows L2-normalised), ``"euclidean"`` or ``"ip"``.
    temperature : T of the weighted vote ``exp(s / T)``.
    loo : leave-one-out over ``X_train``; a row's exact duplicates still count as neighbours.
    backend : neighbour-search backend (see :mod:`probekit.neighbours`).
    method : ``"exact"`` (default), ``"ivf"``, ``"hnsw"`` or a
        :class:`~probekit.neighbours.SearchMethod`; an approximate search's recall and accuracy
        cost, measured on a seeded sample of queries, are in ``to_dict()["approximation"]``.
    n_bootstrap, seed : bootstrap resamples of the accuracy CI and their seed (which also
        seeds the approximation's query sample).

    Returns
    -------
    KNNResult
    """
    X_train, y_train = check_dataset(X_train, y_train, which="train")
    if loo:
        if X_test is not None or y_test is not None:
            raise InputError("leave-one-out evaluates one set: do not pass a test set with loo")
    elif X_test is None or y_test is None:
        raise InputError("pass X_test and y_test, or loo=True to classify each row by the others")
    else:
        X_test, y_test = check_dataset(X_test, y_test, which="test")
        check_same_dimensions(X_train, X_test)
    encoding = encode_labels(y_train, None if loo else y_test)
    ks, notes = resolve_k(k, X_train.shape[0] - 1 if loo else X_train.shape[0])
    train = neighbours.prepare_vectors(X_train, metric=metric)
    queries = None if loo else neighbours.prepare_vectors(X_test, metric=metric)
    y_true = encoding.train if loo else encoding.test
    n_classes = len(encoding.classes)
    predicted = knn_predict(
        train, encoding.train, queries, n_classes=n_classes, k=ks, metric=metric,
        temperature=temperature, query_codes=y_true, backend=backend, method=method, seed=seed,
    )
    ci95 = bootstrap_ci(correctness_columns(predicted, y_true), n_resamples=n_bootstrap, seed=seed)
    scores = score_knn(predicted, y_true, n_classes=encoding.n_train_classes, ci95=ci95)
    return KNNResult(
        k=ks, metric=metric, temperature=temperature, loo=loo, backend=predicted.backend,
        majority=scores["majority"], weighted=scores["weighted"], predictions=predicted,
        classes=encoding.classes, warnings=tuple(notes),
    )

