"""Comparing two embedding spaces: deltas, McNemar's exact test, paired bootstrap, the CLI."""

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import probekit
from conftest import gaussian_classes
from probekit.cli import cli
from probekit.compare import compare_reports, mcnemar_exact, paired_difference_ci
from probekit.errors import InputError
from probekit.probes.metrics import bootstrap_ci
from probekit.report import Report


def test_mcnemar_exact_equals_the_binomial_by_hand_and_scipy():
    a = np.array([1, 1, 0, 0, 0, 0, 0, 1, 1, 1], bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    test = mcnemar_exact(a, b)
    assert (test["only_a"], test["only_b"]) == (1, 5)
    # P[X <= 1] for X ~ Bin(6, 1/2) is (1 + 6) / 64; two-sided doubles it
    assert test["p_value"] == pytest.approx(14 / 64)
    scipy_stats = pytest.importorskip("scipy.stats")
    for only_a, only_b in [(0, 7), (3, 3), (10, 2), (40, 25)]:
        a = np.r_[np.ones(only_a, bool), np.zeros(only_b, bool), np.ones(5, bool)]
        b = np.r_[np.zeros(only_a, bool), np.ones(only_b, bool), np.ones(5, bool)]
        expected = scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert mcnemar_exact(a, b)["p_value"] == pytest.approx(min(1.0, expected), rel=1e-12)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    with pytest.raises(InputError, match="different lengths"):
        mcnemar_exact(a, a[:-1])


def test_paired_difference_ci_resamples_both_runs_on_the_same_rows():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.6, rng.random(200) < 0.8
    low, high = paired_difference_ci(a, b, n_resamples=500, seed=3)
    expected = bootstrap_ci(b.astype(float) - a.astype(float), n_resamples=500, seed=3)
    assert (low, high) == (expected[0], expected[1])
    assert low < b.mean() - a.mean() < high


def two_spaces(n=400, seed=0):
    """The same samples in a good space and in a noisier one, with a given test split."""
    X, y = gaussian_classes(n, dim=16, n_classes=4, separation=1.2, seed=seed)
    noisy = X + np.random.default_rng(5).normal(scale=2.5, size=X.shape).astype(np.float32)
    return (X[:300], noisy[:300], y[:300]), (X[300:], noisy[300:], y[300:])


def run(X, y, X_test=None, y_test=None, **options):
    return probekit.dual_probe(X, y, X_test=X_test, y_test=y_test, k=(1, 5, 10),
                               geometry=False, n_bootstrap=200, save_predictions=True, **options)


def test_a_space_compared_with_itself_has_zero_deltas_and_p_one():
    (X, _, y), (X_test, _, y_test) = two_spaces()
    report = run(X, y, X_test, y_test)
    frame = report.compare(report)
    assert isinstance(frame, pd.DataFrame)
    assert (frame["delta"].dropna() == 0).all()
    accuracy = frame[frame.metric == "accuracy"]
    assert len(accuracy) == 1 + 2 * 3 and (accuracy["p_mcnemar"] == 1.0).all()
    assert (accuracy["delta_ci95_low"] == 0).all() and (accuracy["delta_ci95_high"] == 0).all()


def test_a_better_space_wins_with_a_small_p_and_a_positive_interval(tmp_path):
    (good, noisy, y), (good_test, noisy_test, y_test) = two_spaces()
    a, b = run(noisy, y, noisy_test, y_test), run(good, y, good_test, y_test)
    # the paired test sees the saved predictions after a round trip through the files
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    frame = compare_reports(Report.load(tmp_path / "a.json"), Report.load(tmp_path / "b.json"),
                            n_bootstrap=300)
    linear = frame[(frame.probe == "linear") & (frame.metric == "accuracy")].iloc[0]
    assert linear["b"] - linear["a"] == pytest.approx(linear["delta"])
    assert linear["delta"] > 0.1 and linear["p_mcnemar"] < 1e-3 and linear["better"] == "B"
    assert 0 < linear["delta_ci95_low"] < linear["delta"] < linear["delta_ci95_high"]
    correct_a = a.arrays["correct_linear"]
    correct_b = b.arrays["correct_linear"]
    assert linear["p_mcnemar"] == mcnemar_exact(correct_a, correct_b)["p_value"]
    assert linear["a"] == pytest.approx(correct_a.mean())
    knn = frame[(frame.probe == "knn") & (frame.metric == "accuracy")]
    assert knn["p_mcnemar"].notna().all()


def test_runs_on_different_test_sets_are_not_paired():
    (X, _, y), _ = two_spaces()
    a, b = run(X, y, seed=0), run(X, y, seed=1)  # two different holdout splits
    with pytest.raises(InputError, match="different test sets"):
        a.compare(b)
    plain = probekit.dual_probe(X, y, k=(1, 5), geometry=False, n_bootstrap=50, seed=1)
    frame = a.compare(plain)  # without saved predictions: deltas only
    assert frame["p_mcnemar"].isna().all() and frame["delta"].notna().any()


def test_kfold_and_loo_runs_pair_on_their_own_test_samples():
    (X, noisy, y), _ = two_spaces()
    folds = [run(space, y, folds=3) for space in (X, noisy)]
    assert folds[0].arrays["correct_linear"].shape == (300,)
    assert folds[0].compare(folds[1])["p_mcnemar"].notna().any()
    loo = [run(space, y, loo=True) for space in (X, noisy)]
    assert loo[0].arrays["correct_knn"].shape == (300, 6)
    assert loo[0].compare(loo[1])["p_mcnemar"].notna().any()


def test_cli_compare_reports_and_embeddings(tmp_path):
    (good, noisy, y), (good_test, noisy_test, y_test) = two_spaces()
    for name, array in {"good": good, "noisy": noisy, "y": y, "good_test": good_test,
                        "noisy_test": noisy_test, "y_test": y_test}.items():
        np.save(tmp_path / f"{name}.npy", array)
    runner = CliRunner()
    for name in ("noisy", "good"):
        result = runner.invoke(cli, [
            "evaluate", str(tmp_path / f"{name}.npy"), str(tmp_path / "y.npy"),
            "--test-embeddings", str(tmp_path / f"{name}_test.npy"), "--test-labels",
            str(tmp_path / "y_test.npy"), "--k", "1,5", "--no-geometry", "--bootstrap", "100",
            "--save-predictions", "--out", str(tmp_path / f"{name}.json"), "-q"])
        assert result.exit_code == 0, (result.output, result.exception)
    result = runner.invoke(cli, ["compare", str(tmp_path / "noisy.json"),
                                 str(tmp_path / "good.json"), "--out",
                                 str(tmp_path / "cmp.csv")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "McNemar p" in result.output and "| linear |  | accuracy |" in result.output
    table = pd.read_csv(tmp_path / "cmp.csv")
    assert table.loc[table.metric == "accuracy", "p_mcnemar"].notna().all()

    both = runner.invoke(cli, [
        "compare", str(tmp_path / "noisy.npy"), str(tmp_path / "good.npy"),
        str(tmp_path / "y.npy"), "--test-embeddings-a", str(tmp_path / "noisy_test.npy"),
        "--test-embeddings-b", str(tmp_path / "good_test.npy"), "--test-labels",
        str(tmp_path / "y_test.npy"), "--k", "1,5", "--bootstrap", "100", "-q"])
    assert both.exit_code == 0, (both.output, both.exception)
    assert "Linear CKA between the two spaces" in both.output
    cka = float(both.output.split("(same samples): ")[1].split()[0])
    assert cka == pytest.approx(probekit.cka(noisy, good), abs=1e-4)
    assert not math.isnan(cka) and 0 < cka < 1

    bad = runner.invoke(cli, ["compare", str(tmp_path / "good.json")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error:")
    no_out = runner.invoke(cli, ["evaluate", str(tmp_path / "good.npy"), str(tmp_path / "y.npy"),
                                 "--save-predictions"])
    assert no_out.exit_code == 2 and "--out" in no_out.stderr


def test_reports_of_different_tasks_or_test_sets(tmp_path):
    (X, noisy, y), _ = two_spaces()
    tags = np.zeros((300, 3), bool)
    tags[np.arange(300), y % 3] = True
    single = probekit.dual_probe(X, y, k=(1, 5), geometry=False, n_bootstrap=50)
    multi = probekit.dual_probe(X, tags, k=(1, 5), geometry=False, n_bootstrap=50)
    with pytest.raises(InputError, match="cannot compare a multiclass report with a multilabel"):
        single.compare(multi)
    other = probekit.dual_probe(X[:200], y[:200], k=(1, 5), geometry=False, n_bootstrap=50)
    frame = single.compare(other)
    assert "different test sets" in frame.attrs["notes"][0]
    single.save(tmp_path / "a.json")
    other.save(tmp_path / "b.json")
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a.json"),
                                      str(tmp_path / "b.json")])
    assert result.exit_code == 0 and "Note: the two runs were scored on different test sets" \
        in result.output
    missing = CliRunner().invoke(cli, ["compare", str(tmp_path / "a.json"),
                                       str(tmp_path / "nowhere.json")])
    assert missing.exit_code == 2 and "report not found" in missing.stderr


def test_cli_compare_two_spaces_of_tags(tmp_path):
    (X, noisy, y), _ = two_spaces()
    tags = np.zeros((300, 3), bool)
    tags[np.arange(300), y % 3] = True
    tags[::4, (y[::4] + 1) % 3] = True
    np.save(tmp_path / "a.npy", noisy)
    np.save(tmp_path / "b.npy", X)
    np.save(tmp_path / "tags.npy", tags.astype(np.int8))
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"),
                                      str(tmp_path / "tags.npy"), "--k", "1,5", "--bootstrap",
                                      "50", "--no-geometry", "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "| linear |  | map |" in result.output and "Linear CKA" in result.output
