"""Multi-label (tagging) probes: kNN tag scores, one-vs-rest logistic regression, the report,
the Jaccard neighbour agreement and the CLI, against scikit-learn and hand computations."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import probekit
from probekit.cli import cli
from probekit.errors import InputError
from probekit.geometry.graph import jaccard_similarity
from probekit.probes.linear import standardize
from probekit.probes.multilabel import fit_ovr_logistic, knn_tag_scores
from probekit.probes.tagging import mean_average_precision


def tagged(n=600, n_tags=6, dim=16, seed=0, noise=0.8):
    """Rows that are the sum of their tags' centres plus noise; every row has 1-3 tags."""
    rng = np.random.default_rng(seed)
    Y = rng.random((n, n_tags)) < 0.2
    Y[np.arange(n), rng.integers(0, n_tags, n)] = True
    centres = rng.normal(size=(n_tags, dim))
    X = Y.astype(float) @ centres + noise * rng.normal(size=(n, dim))
    return X.astype(np.float32), Y


def test_knn_tag_scores_equal_the_weighted_fraction_by_hand():
    rng = np.random.default_rng(1)
    tags = rng.random((30, 4)) < 0.4
    indices = rng.integers(0, 30, size=(5, 6))
    similarities = -np.sort(-rng.random((5, 6)), axis=1).astype(np.float32)
    scores = knn_tag_scores(indices, similarities, tags, (1, 3, 6), temperature=0.1)
    for k in (1, 3, 6):
        for query in range(5):
            weights = np.exp((similarities[query, :k] - similarities[query, 0]) / 0.1)
            expected = (weights[:, None] * tags[indices[query, :k]]).sum(0) / weights.sum()
            np.testing.assert_allclose(scores[k][query], expected, rtol=1e-6)
    assert set(scores) == {1, 3, 6}


def test_one_vs_rest_logistic_regression_equals_scikit_learn_per_tag():
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, Y = tagged(300, n_tags=4, dim=8)
    standard, _ = standardize(X, X)
    params, _, converged = fit_ovr_logistic(standard, Y, C=0.5, tol=1e-10, max_iter=5000)
    assert converged
    X64, n = standard.astype(np.float64), len(standard)

    def objective(coef, intercept, y):  # scikit-learn's per-tag objective, in float64
        z = X64 @ coef + intercept
        return 0.5 * coef @ coef + 0.5 * np.sum(np.logaddexp(0, z) - y * z)

    for tag in range(4):
        reference = sklearn.LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(
            X64, Y[:, tag])
        # our L-BFGS stops on its relative-decrease rule about 1e-4 from the optimum
        # (measured up to 2.4e-4 across BLAS kernels and data draws); a C off by 2 % moves
        # the parameters by 1.5e-2, so 2e-3 still tells a wrong objective from rounding
        np.testing.assert_allclose(params[:-1, tag], reference.coef_[0], atol=2e-3)
        assert params[-1, tag] == pytest.approx(reference.intercept_[0], abs=2e-3)
        ours = objective(params[:-1, tag], params[-1, tag], Y[:, tag]) / (0.5 * n)
        best = objective(reference.coef_[0], reference.intercept_[0], Y[:, tag]) / (0.5 * n)
        assert (ours - best) / best <= 1e-7  # the same minimum of the same objective


def test_dual_probe_on_tags_matches_scikit_learn_and_brute_force():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    X, Y = tagged(700)
    report = probekit.dual_probe(X[:500], Y[:500], X_test=X[500:], y_test=Y[500:],
                                 k=(1, 5, 10), n_bootstrap=100, geometry=False, tol=1e-8,
                                 max_iter=3000)
    assert report.task == "multilabel" and report.main_metric == "map"
    assert report.input["n_tags"] == 6 and report.protocol["split"] == "given"
    # kNN: cosine neighbours by brute force, the weighted fraction, sklearn's macro AP
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    similarity = unit[500:] @ unit[:500].T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :5]
    sims = np.take_along_axis(similarity, order, axis=1)
    scores = knn_tag_scores(order, sims, Y[:500], (5,), temperature=0.07)[5]
    expected = average_precision_score(Y[500:], scores, average="macro")
    assert report.knn["weighted"]["5"]["map"] == pytest.approx(expected, abs=1e-4)
    # linear: one-vs-rest logistic regression at the chosen C on standardised features
    train, test = standardize(X[:500], X[500:])
    probabilities = np.column_stack([
        LogisticRegression(C=report.linear["C"], tol=1e-10, max_iter=10_000)
        .fit(train, Y[:500, tag]).predict_proba(test)[:, 1] for tag in range(6)])
    assert report.linear["map"] == pytest.approx(
        average_precision_score(Y[500:], probabilities, average="macro"), abs=1e-3)
    assert report.linear["C"] == report.linear["C_grid"][int(np.argmax(report.linear["val_map"]))]
    assert sklearn is not None
    low, high = report.linear["ci95"]
    assert low <= report.linear["map"] <= high
    frame = report.to_frame()
    assert set(frame.metric) >= {"map", "roc_auc", "d_prime", "micro_f1", "macro_f1_tuned"}
    assert "| linear | C=" in report.to_markdown() and "mAP" in report.reading()


def test_tags_missing_from_train_or_test_are_named_and_left_out():
    X, Y = tagged(400, n_tags=5)
    Y_train, Y_test = Y[:300].copy(), Y[300:].copy()
    Y_train[:, 4] = False  # tag 4 never occurs in training
    Y_test[:, 3] = False  # tag 3 has no positive in the test set
    report = probekit.dual_probe(X[:300], Y_train, X_test=X[300:], y_test=Y_test,
                                 tags=list("abcde"), k=(1, 5), n_bootstrap=50, geometry=False)
    notes = " ".join(report.warnings)
    assert "never occur in training and are left out: e" in notes
    assert "no positive in the test set and are not averaged: d" in notes
    assert report.input["tags"] == list("abcd")
    assert report.knn["weighted"]["5"]["n_tags_scored"] == 3
    expected_test = mean_average_precision(Y_test[:, :3], np.ones((100, 3)))
    assert 0 < expected_test <= 1  # the scored tags have positives


def test_report_is_deterministic_valid_json_and_loads_back(tmp_path):
    X, Y = tagged(300)
    first = probekit.dual_probe(X, Y, k=(1, 5), n_bootstrap=50, seed=3)
    again = probekit.dual_probe(X, Y, k=(1, 5), n_bootstrap=50, seed=3)
    strip = [{**json.loads(r.to_json()), "timings": None} for r in (first, again)]
    assert strip[0] == strip[1]
    first.save(tmp_path / "tags.json")
    loaded = probekit.Report.load(tmp_path / "tags.json")
    assert loaded.task == "multilabel" and loaded.to_markdown() == first.to_markdown()
    assert "neighbour_jaccard" in first.geometry
    assert first.protocol["split"] == "holdout" and not first.protocol["stratified"]


def test_unsupported_protocols_and_bad_tag_matrices_are_one_line_errors():
    X, Y = tagged(200)
    for options in ({"loo": True}, {"folds": 3}, {"save_predictions": True},
                    {"projection": True}):
        with pytest.raises(InputError, match="not available for multi-label"):
            probekit.dual_probe(X, Y, **options)
    with pytest.raises(InputError, match="only 0 and 1"):
        probekit.dual_probe(X, Y.astype(int) * 2)
    with pytest.raises(InputError, match="no tag has a positive in the test set"):
        probekit.dual_probe(X[:100], Y[:100], X_test=X[100:], y_test=np.zeros((100, 6), bool))


def test_jaccard_similarity_and_neighbour_agreement_by_hand():
    a = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0]], bool)
    b = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], bool)
    np.testing.assert_allclose(jaccard_similarity(a, b), [1 / 3, 1.0, 0.0])
    # two tight groups: neighbours inside a group share exactly its tags
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(1, 8)) + 0.01 * rng.normal(size=(20, 8)),
                   -rng.normal(size=(1, 8)) + 0.01 * rng.normal(size=(20, 8))]).astype(np.float32)
    tags = np.zeros((40, 3), bool)
    tags[:20, [0, 1]] = True
    tags[20:, 2] = True
    agreement = probekit.diagnose(X, tags=tags)["neighbour_jaccard"]  # 10 nearest others
    assert agreement == pytest.approx(1.0)
    shuffled = tags[np.random.default_rng(1).permutation(40)]
    assert probekit.diagnose(X, tags=shuffled)["neighbour_jaccard"] < 0.8


def test_cli_multilabel_from_text_and_from_a_matrix(tmp_path):
    X, Y = tagged(400, n_tags=4)
    names = np.array(["dog", "rain", "speech", "car"])
    lines = [";".join(names[row]) for row in Y]
    lines[5] = ""  # a clip without tags
    np.save(tmp_path / "X.npy", X[:300])
    np.save(tmp_path / "X_test.npy", X[300:])
    (tmp_path / "tags.txt").write_text("\n".join(lines[:300]) + "\n")
    test_lines = lines[300:]
    test_lines[0] += ";siren"  # a tag the training set never has
    (tmp_path / "test_tags.txt").write_text("\n".join(test_lines) + "\n")
    runner = CliRunner()
    result = runner.invoke(cli, [
        "evaluate", str(tmp_path / "X.npy"), str(tmp_path / "tags.txt"), "--multilabel",
        "--test-embeddings", str(tmp_path / "X_test.npy"), "--test-labels",
        str(tmp_path / "test_tags.txt"), "--k", "1,5", "--bootstrap", "50",
        "--out", str(tmp_path / "r.json"), "--plots", str(tmp_path / "figs"),
        "--html", str(tmp_path / "r.html"), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "multi-label" in result.output and "| kNN | k=5 weighted |" in result.output
    assert "siren" in result.output  # named in the warnings
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["input"]["tags"] == ["car", "dog", "rain", "speech"]
    assert (tmp_path / "figs" / "knn_curve.png").exists()
    assert "mAP" in (tmp_path / "r.html").read_text()

    np.save(tmp_path / "Y.npy", Y[:300].astype(np.int8))
    matrix = runner.invoke(cli, ["evaluate", str(tmp_path / "X.npy"), str(tmp_path / "Y.npy"),
                                 "--k", "1,5", "--bootstrap", "50", "--no-geometry"])
    assert matrix.exit_code == 0, (matrix.output, matrix.exception)
    assert "multi-label" in matrix.output
    bad = runner.invoke(cli, ["evaluate", str(tmp_path / "X.npy"), str(tmp_path / "Y.npy"),
                              "--loo"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error:") and \
        len(bad.stderr.strip().splitlines()) == 1


def test_layerwise_probing_of_tags_uses_the_map():
    X, Y = tagged(300)
    stack = np.stack([X, X + np.random.default_rng(2).normal(scale=4, size=X.shape)])
    result = probekit.dual_probe_layers(stack.astype(np.float32), Y, k=(1, 5),
                                        n_bootstrap=50)
    frame = result.to_frame()
    assert frame.loc[0, "linear"] == result.reports[0].linear["map"]
    assert result.best_layer("knn") == "layer 0"
