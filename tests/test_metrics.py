import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from probekit.probes.metrics import (
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    classification_scores,
    macro_f1,
)


@pytest.mark.parametrize("seed", range(5))
def test_point_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 7, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 9, 200))  # 7, 8 unseen
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    with np.errstate(all="ignore"), pytest.warns(UserWarning):  # sklearn warns on y_pred-only
        expected_balanced = balanced_accuracy_score(y_true, y_pred)
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(expected_balanced)
    assert macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_metrics_hand_case():
    y_true = np.array([0, 0, 0, 1])
    y_pred = np.array([0, 0, 1, 1])
    assert accuracy(y_true, y_pred) == 0.75
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((2 / 3 + 1) / 2)
    # F1 class 0: 2*2/(4+0+1) = 0.8; class 1: 2*1/(2+1+0) = 2/3
    assert macro_f1(y_true, y_pred) == pytest.approx((0.8 + 2 / 3) / 2)


def test_bootstrap_equals_explicit_resampling():
    rng = np.random.default_rng(0)
    correct = rng.random((500, 3)) < [0.5, 0.8, 0.95]
    bounds = bootstrap_ci(correct, n_resamples=1000, seed=7)
    draws = np.random.default_rng(7).integers(0, 500, size=(1000, 500))
    means = correct[draws].mean(axis=1)
    expected = np.percentile(means, [2.5, 97.5], axis=0).T
    np.testing.assert_allclose(bounds, expected, rtol=0, atol=1e-12)


def test_bootstrap_contains_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1000, 10000):
        correct = rng.random(n) < 0.7
        low, high = bootstrap_ci(correct, seed=0)
        assert low <= correct.mean() <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # binomial theory: width ~ 2 * 1.96 * sqrt(p (1 - p) / n)
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 10000), rel=0.15)


def test_bootstrap_is_seeded_and_paired():
    correct = np.random.default_rng(2).random(300) < 0.6
    assert np.array_equal(bootstrap_ci(correct, seed=3), bootstrap_ci(correct, seed=3))
    others = [bootstrap_ci(correct, seed=seed) for seed in range(4, 10)]
    assert any(not np.array_equal(bootstrap_ci(correct, seed=3), other) for other in others)
    both = bootstrap_ci(np.column_stack([correct, correct]), seed=3)
    assert np.array_equal(both[0], both[1])
    assert np.array_equal(both[0], bootstrap_ci(correct, seed=3))


def test_bootstrap_of_constant_correctness():
    assert bootstrap_ci(np.ones(50), seed=0).tolist() == [1.0, 1.0]
    assert bootstrap_ci(np.zeros(1), seed=0).tolist() == [0.0, 0.0]


def test_classification_scores_top5_only_with_ten_classes():
    y = np.arange(20) % 10
    ranks = np.where(np.arange(20) < 10, 0.0, 6.0)
    scores = classification_scores(y, y, ci95=(0.9, 1.0), true_rank=ranks, n_classes=10)
    assert scores.top5_accuracy == 0.5
    assert "top5_accuracy" in scores.to_dict()
    few = classification_scores(y, y, ci95=(0.9, 1.0), true_rank=ranks, n_classes=9)
    assert few.top5_accuracy is None and "top5_accuracy" not in few.to_dict()
