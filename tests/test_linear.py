import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from conftest import gaussian_classes
from probekit import linear_probe
from probekit.errors import InputError
from probekit.probes.linear import DEFAULT_C_GRID, fit_logistic, linear_predict, standardize


def overlapping(n=3000, dim=32, n_classes=10, seed=0):
    """Classes that overlap: accuracy well below 1, so the regularisation matters."""
    X, y = gaussian_classes(n, dim, n_classes, separation=0.35, seed=seed)
    return X, y


def test_standardize_equals_standard_scaler():
    X, _ = overlapping(500)
    X[:, 3] = 2.0  # a constant feature is only centred
    rows = np.arange(0, 500, 2)
    train, test = standardize(X, X[:7], train_rows=rows)
    scaler = StandardScaler().fit(X[rows].astype(np.float64))
    np.testing.assert_allclose(train, scaler.transform(X[rows]), atol=2e-5)
    np.testing.assert_allclose(test, scaler.transform(X[:7]), atol=2e-5)
    assert train.dtype == np.float32


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_fit_matches_scikit_learn_minimiser(C):
    X, y = overlapping(600, 10, 3)
    Xs = StandardScaler().fit_transform(X).astype(np.float32)
    ours = fit_logistic(Xs, y, n_classes=3, C=C, tol=1e-9, max_iter=5000)
    theirs = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(Xs.astype(np.float64), y)
    # scikit-learn's multinomial parameters are centred over classes; ours are too at the
    # optimum of the L2-penalised objective (the intercept is fixed only up to a constant)
    np.testing.assert_allclose(ours.coef.T, theirs.coef_, atol=2e-3 * max(1, abs(
        theirs.coef_).max()))
    centred = ours.intercept - ours.intercept.mean()
    np.testing.assert_allclose(centred, theirs.intercept_ - theirs.intercept_.mean(), atol=5e-3)


@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_probe_accuracy_within_half_a_point_of_scikit_learn(C):
    X, y = overlapping(6000, 32, 10, seed=1)
    X, y, Xt, yt = X[:4000], y[:4000], X[4000:], y[4000:]
    ours = linear_probe(X, y, Xt, yt, C=[C], n_bootstrap=10)
    scaler = StandardScaler().fit(X)
    # scikit-learn run to the optimum: where it stops at its default tol depends on scipy's
    # L-BFGS-B, not on the objective both minimise
    model = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(scaler.transform(X), y)
    theirs = model.score(scaler.transform(Xt), yt)
    assert 0.2 < theirs < 0.99
    assert abs(ours.scores.accuracy - theirs) <= 0.005
    assert ours.predictions.C == C and ours.predictions.val_accuracy == ()


def test_sweep_chooses_C_on_validation_only():
    X, y = overlapping(2100)
    X, y, Xt, yt = X[:1500], y[:1500], X[1500:], y[1500:]
    first = linear_probe(X, y, Xt, yt, n_bootstrap=10)
    shuffled = linear_probe(X, y, Xt, np.random.default_rng(0).permutation(yt), n_bootstrap=10)
    assert first.predictions.C == shuffled.predictions.C
    assert first.predictions.val_accuracy == shuffled.predictions.val_accuracy
    details = first.to_dict()
    assert details["C_grid"] == list(DEFAULT_C_GRID)
    assert len(details["val_accuracy"]) == len(details["n_iter"]) == 9
    best = max(range(9), key=lambda i: (details["val_accuracy"][i], -details["val_loss"][i]))
    assert details["C"] == DEFAULT_C_GRID[best]
    assert details["n_val"] == pytest.approx(150, abs=10)
    assert all(details["converged"]) and details["refit_converged"]


def test_chosen_C_refit_equals_single_C_fit():
    X, y = overlapping(1600)
    X, y, Xt, yt = X[:1200], y[:1200], X[1200:], y[1200:]
    swept = linear_probe(X, y, Xt, yt, n_bootstrap=10)
    single = linear_probe(X, y, Xt, yt, C=[swept.predictions.C], n_bootstrap=10)
    assert np.mean(swept.predictions.predictions == single.predictions.predictions) > 0.99


def test_top5_rank_and_classes_unseen_in_training():
    X, y = overlapping(1200)
    X, y, Xt, yt = X[:1000], y[:1000], X[1000:], y[1000:]
    query = np.where(yt == 0, 10, yt)  # class 0 plays a class never seen in training
    codes = linear_predict(X, y, Xt, n_classes=10, query_codes=query, C=[1.0])
    assert np.isinf(codes.true_rank[yt == 0]).all()
    assert (codes.true_rank[codes.predictions == query] == 0).all()
    assert (codes.true_rank[(codes.predictions != query) & (yt != 0)] >= 1).all()
    assert (codes.predictions < 10).all()


def test_non_convergence_is_reported():
    X, y = overlapping(800)
    result = linear_probe(X, y, X[:100], y[:100], C=[0.1, 10.0], max_iter=2, n_bootstrap=10)
    assert any("did not converge" in note for note in result.predictions.warnings)
    assert result.predictions.converged == (False, False)


def test_tiny_training_set_without_validation_split_uses_C_1():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    y = np.array([0, 1, 0, 1])
    predicted = linear_predict(X[:2], y[:2], X[2:], n_classes=2, query_codes=y[2:])
    assert predicted.C == 1.0
    assert "validation split" in predicted.warnings[0]
    assert predicted.predictions.tolist() == [0, 1]


def test_string_labels_and_bad_calls():
    X, y = overlapping(400)
    names = np.array([f"class-{i}" for i in range(10)])
    named = linear_probe(X, names[y], X[:50], names[y[:50]], C=[1.0], n_bootstrap=10)
    coded = linear_probe(X, y, X[:50], y[:50], C=[1.0], n_bootstrap=10)
    assert named.to_dict() == coded.to_dict()
    with pytest.raises(InputError, match="single class"):
        linear_probe(X, np.zeros(400), X, np.zeros(400))
    with pytest.raises(InputError, match="C values must be positive"):
        linear_probe(X, y, X, y, C=[0.0, 1.0])
    with pytest.raises(InputError, match="dimensions"):
        linear_probe(X, y, X[:, :5], y)


def test_lbfgs_solves_a_convex_quadratic():
    from probekit.probes.lbfgs import lbfgs

    rng = np.random.default_rng(0)
    M = rng.normal(size=(30, 30))
    A = M @ M.T + 0.5 * np.eye(30)
    b = rng.normal(size=30)
    x, n_iter, converged = lbfgs(lambda v: (0.5 * v @ A @ v - b @ v, A @ v - b), np.zeros(30),
                                 tol=1e-9, ftol=0.0)
    assert converged and n_iter < 200
    np.testing.assert_allclose(x, np.linalg.solve(A, b), atol=1e-6)
    _, n_iter, converged = lbfgs(lambda v: (0.5 * v @ A @ v - b @ v, A @ v - b), np.zeros(30),
                                 tol=1e-10, ftol=0.0, max_iter=3)
    assert n_iter == 3 and not converged


def test_top5_rank_counts_exact_ties_like_argmax():
    X = np.ones((200, 8), dtype=np.float32)  # a collapsed encoder: every score ties
    y = np.arange(200) % 10
    result = linear_probe(X, y, X[:100], y[:100], C=[1.0], n_bootstrap=10)
    assert result.scores.accuracy == pytest.approx(0.1)
    assert result.scores.top5_accuracy == pytest.approx(0.5)  # chance, not 1.0


def test_few_samples_per_dimension_agree_with_scikit_learn_at_tight_tolerance():
    # 25 classes, 512 dimensions, 120 samples per class: the loss is flat near its minimum, so
    # solvers stopped at tol=1e-4 land on path-dependent points; at 1e-6 both find the optimum
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(25, 512)) * 0.12
    y = rng.integers(0, 25, 4500)
    X = (centres[y] + rng.normal(size=(4500, 512)) * np.linspace(0.2, 5, 512) + 3)
    X = X.astype(np.float32)
    ours = linear_probe(X[:3000], y[:3000], X[3000:], y[3000:], C=[10.0], tol=1e-6,
                        n_bootstrap=10)
    scaler = StandardScaler().fit(X[:3000])
    model = LogisticRegression(C=10.0, tol=1e-8, max_iter=20_000)
    theirs = model.fit(scaler.transform(X[:3000]), y[:3000]).score(
        scaler.transform(X[3000:]), y[3000:])
    assert abs(ours.scores.accuracy - theirs) <= 0.005


def test_sweep_standardises_with_the_fit_part_only():
    # a feature whose scale differs between the fit part and the validation rows: the sweep
    # must not see validation statistics, so its scores equal a manual fit-part-only sweep
    X, y = overlapping(600)
    predicted = linear_predict(X, y, X[:50], n_classes=10, C=[0.1, 1.0])
    from probekit.splits import stratified_holdout

    fit, val = stratified_holdout(y, test_size=0.1, seed=0)
    fit_x, val_x = standardize(X, X, train_rows=fit, test_rows=val)
    first = fit_logistic(fit_x, y[fit], n_classes=10, C=0.1)
    expected = np.mean(first.decision_scores(val_x).argmax(axis=1) == y[val])
    assert predicted.val_accuracy[0] == pytest.approx(expected)


def test_two_classes_match_scikit_learn_at_the_same_C_not_at_2C():
    """scikit-learn's binary logistic regression penalises one vector w; the softmax over two
    classes has w = w1 - w0 and, unscaled, half the penalty: probekit used to match scikit-learn
    at 2C. The weight difference must equal scikit-learn's coef_ at the same C."""
    rng = np.random.default_rng(11)
    differ_at_double = 0
    for _ in range(30):
        n, dim = rng.integers(40, 200), rng.integers(2, 12)
        X = rng.normal(size=(n, dim)).astype(np.float32)
        y = (X @ rng.normal(size=dim) + rng.normal(size=n) * 1.5 > 0).astype(int)
        if len(np.unique(y)) < 2:
            continue
        C = float(10.0 ** rng.uniform(-3, 1))
        ours = fit_logistic(X, y, n_classes=2, C=C, tol=1e-10, max_iter=5000)
        w = ours.coef[:, 1] - ours.coef[:, 0]
        same = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X.astype(float), y)
        double = LogisticRegression(C=2 * C, tol=1e-12, max_iter=10_000).fit(X.astype(float), y)
        scale = max(1.0, np.abs(same.coef_).max())
        # measured: at most 1.1e-4 x scale apart (L-BFGS stopping points), 2e-3 allowed
        np.testing.assert_allclose(w, same.coef_[0], atol=2e-3 * scale)
        assert ours.intercept[1] - ours.intercept[0] == pytest.approx(same.intercept_[0],
                                                                      abs=2e-3 * scale)
        differ_at_double += not np.allclose(w, double.coef_[0], atol=2e-3 * scale)
    assert differ_at_double == 30  # the old objective (scikit-learn at 2C) is far off
