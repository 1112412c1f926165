import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from probekit import knn_probe
from probekit.errors import InputError
from probekit.probes.knn import knn_votes, resolve_k


def reference_votes(train, y_train, queries, k, temperature, *, metric="cosine", loo=False):
    """Both votes from the definition, one query at a time, in float64."""
    def prep(X):
        X = X.astype(np.float64)
        return X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X

    train, queries = prep(train), prep(queries)
    majority, weighted = [], []
    for i, q in enumerate(queries):
        if metric == "euclidean":
            sims = -np.linalg.norm(train - q, axis=1)
        else:
            sims = train @ q
        order = [j for j in sorted(range(len(train)), key=lambda j: (-sims[j], j))
                 if not (loo and j == i)][:k]
        counts, weights, first = {}, {}, {}
        for rank, j in enumerate(order):
            c = y_train[j]
            counts[c] = counts.get(c, 0) + 1
            weights[c] = weights.get(c, 0.0) + np.exp(sims[j] / temperature)
            first.setdefault(c, rank)
        majority.append(min(counts, key=lambda c: (-counts[c], first[c])))
        weighted.append(min(weights, key=lambda c: (-weights[c], first[c])))
    return np.array(majority), np.array(weighted)


def random_problem(seed, n_train=120, n_test=40, dim=6, n_classes=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n_train, dim)), rng.integers(0, n_classes, n_train),
            rng.normal(size=(n_test, dim)), rng.integers(0, n_classes, n_test))


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "ip"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_votes_equal_brute_force_reference(metric, seed):
    X, y, Xt, yt = random_problem(seed)
    ks = (1, 2, 4, 7, 30)
    temperature = 0.5 if metric != "cosine" else 0.07
    result = knn_probe(X, y, Xt, yt, k=ks, metric=metric, temperature=temperature,
                       n_bootstrap=50)
    for i, k in enumerate(ks):
        majority, weighted = reference_votes(X, y, Xt, k, temperature, metric=metric)
        predicted = {vote: result.classes[result.predictions.predictions[vote][i]]
                     for vote in ("majority", "weighted")}
        np.testing.assert_array_equal(predicted["majority"], majority)
        np.testing.assert_array_equal(predicted["weighted"], weighted)
        assert result.majority[k].accuracy == pytest.approx(np.mean(majority == yt))
        assert result.weighted[k].accuracy == pytest.approx(np.mean(weighted == yt))


def test_leave_one_out_equals_brute_force_reference():
    X, y, _, _ = random_problem(3, n_train=90)
    X = np.vstack([X, X[:10]])  # exact duplicates must still count as neighbours
    y = np.concatenate([y, y[:10]])
    result = knn_probe(X, y, k=(1, 3, 6), loo=True, n_bootstrap=50)
    for i, k in enumerate((1, 3, 6)):
        majority, weighted = reference_votes(X, y, X, k, 0.07, loo=True)
        predicted = {vote: result.classes[result.predictions.predictions[vote][i]]
                     for vote in ("majority", "weighted")}
        np.testing.assert_array_equal(predicted["majority"], majority)
        np.testing.assert_array_equal(predicted["weighted"], weighted)
    # each duplicated row's nearest other row is its twin, so 1-NN is right for all twenty
    assert (result.classes[result.predictions.predictions["majority"][0][:10]] == y[:10]).all()


@pytest.mark.parametrize("k", [1, 3, 9, 25])
def test_agrees_with_scikit_learn_without_ties(k):
    # two classes and odd k: majority votes cannot tie
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 10))
    y = (X[:, 0] + 0.8 * rng.normal(size=400) > 0).astype(int)
    Xt = rng.normal(size=(150, 10))
    yt = (Xt[:, 0] > 0).astype(int)
    result = knn_probe(X, y, Xt, yt, k=(k,), n_bootstrap=10)
    majority = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    np.testing.assert_array_equal(result.classes[result.predictions.predictions["majority"][0]],
                                  majority.fit(X, y).predict(Xt))
    weighted = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                    weights=lambda d: np.exp((1 - d) / 0.07))
    np.testing.assert_array_equal(result.classes[result.predictions.predictions["weighted"][0]],
                                  weighted.fit(X, y).predict(Xt))
    assert result.majority[k].accuracy == pytest.approx(majority.score(Xt, yt))


def test_majority_tie_goes_to_the_class_of_the_nearest_neighbour():
    # neighbours in order: class 2, class 0, class 0, class 2 -> k=4 ties 2:2, nearest is class 2
    labels = np.array([[2, 0, 0, 2]])
    sims = np.array([[0.9, 0.8, 0.7, 0.6]])
    predictions, ranks = knn_votes(labels, sims, n_classes=3, k=(1, 3, 4), y_true=np.array([0]))
    assert predictions["majority"][:, 0].tolist() == [2, 0, 2]
    assert ranks["majority"][:, 0].tolist() == [np.inf, 0, 1]  # class 1 never seen: inf
    # scikit-learn would pick class 0 at k=4 (lowest index); the weighted vote sees 2 ahead too
    assert predictions["weighted"][2, 0] == 2


def test_weighted_vote_uses_temperature():
    # one very near neighbour of class 1 against two farther ones of class 0
    labels = np.array([[1, 0, 0]])
    sims = np.array([[0.9, 0.5, 0.5]])
    sharp, _ = knn_votes(labels, sims, n_classes=2, k=(3,), temperature=0.07)
    flat, _ = knn_votes(labels, sims, n_classes=2, k=(3,), temperature=100.0)
    assert sharp["weighted"][0, 0] == 1 and flat["weighted"][0, 0] == 0


def test_weighted_vote_does_not_overflow_with_large_inner_products():
    labels = np.array([[0, 1, 1]])
    sims = np.array([[900.0, 899.0, 898.9]])
    predictions, _ = knn_votes(labels, sims, n_classes=2, k=(3,), temperature=0.07)
    assert predictions["weighted"][0, 0] == 0


def test_top5_accuracy_from_vote_ranks():
    rng = np.random.default_rng(5)
    n_classes = 12
    X = rng.normal(size=(600, 8))
    y = rng.integers(0, n_classes, 600)
    Xt, yt = rng.normal(size=(80, 8)), rng.integers(0, n_classes, 80)
    result = knn_probe(X, y, Xt, yt, k=(1, 20), n_bootstrap=10)
    ranks = result.predictions.true_rank["majority"][1]
    assert result.majority[20].top5_accuracy == pytest.approx(np.mean(ranks < 5))
    assert result.majority[20].top5_accuracy >= result.majority[20].accuracy
    assert result.majority[1].top5_accuracy == result.majority[1].accuracy
    right = result.classes[result.predictions.predictions["majority"][1]] == yt
    assert right.any() and (ranks[right] == 0).all()


def test_resolve_k_drops_large_values_with_a_note():
    kept, notes = resolve_k([100, 5, 1, 5], 50)
    assert kept == (1, 5) and "k=100 dropped" in notes[0]
    with pytest.raises(InputError, match="exceeds"):
        resolve_k([100], 50)
    with pytest.raises(InputError, match="positive"):
        resolve_k([0, 3], 50)


def test_string_labels_and_result_dict():
    X, y, Xt, yt = random_problem(6)
    names = np.array(["cat", "dog", "emu", "fox"])
    result = knn_probe(X, names[y], Xt, names[yt], k=(1, 5), n_bootstrap=20)
    reference = knn_probe(X, y, Xt, yt, k=(1, 5), n_bootstrap=20)
    assert result.to_dict() == reference.to_dict()
    data = result.to_dict()
    assert set(data) == {"majority", "weighted", "best", "backend"}
    assert set(data["majority"]) == {"1", "5"}
    low, high = data["majority"]["5"]["ci95"]
    assert low <= data["majority"]["5"]["accuracy"] <= high


def test_bad_calls():
    X, y, Xt, yt = random_problem(7)
    with pytest.raises(InputError, match="loo"):
        knn_probe(X, y, Xt, yt, loo=True)
    with pytest.raises(InputError, match="X_test"):
        knn_probe(X, y)
    with pytest.raises(InputError, match="rows"):
        knn_probe(X, y[:-1], Xt, yt)
    with pytest.raises(InputError, match="dimensions"):
        knn_probe(X, y, Xt[:, :3], yt)
    with pytest.raises(InputError, match="temperature"):
        knn_probe(X, y, Xt, yt, temperature=0)
