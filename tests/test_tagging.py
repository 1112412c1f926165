import json

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from probekit.errors import InputError
from probekit.probes import tagging
from probekit.probes.tagging import (
    TaggingScores,
    average_precision,
    bootstrap_map_ci,
    d_prime,
    f1_scores,
    mean_average_precision,
    roc_auc,
    tagging_scores,
    tags_without_positives,
    tune_thresholds,
)


def tag_data(n=120, n_tags=10, *, seed=0, decimals=1):
    """Multi-hot labels with informative scores rounded to make ties; tag 3 has no positive,
    tag 5 no negative, tag 7 a single positive."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, n_tags)) < rng.uniform(0.05, 0.5, n_tags)
    y[:, 3] = False
    y[:, 5] = True
    y[:, 7] = False
    y[rng.integers(n), 7] = True
    scores = np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0.0, 1.0)
    return y, np.round(scores, decimals)


@pytest.fixture
def small_blocks(monkeypatch):
    """Force several sort blocks, bootstrap chunks and resample blocks on small data."""
    monkeypatch.setattr(tagging, "_BLOCK_ELEMENTS", 300)
    monkeypatch.setattr(tagging, "_CHUNK_BINS", 5)
    monkeypatch.setattr(tagging, "_RESAMPLE_BLOCK", 3)


def sklearn_ap(y, s):
    return np.array(
        [
            average_precision_score(y[:, c], s[:, c]) if y[:, c].any() else np.nan
            for c in range(y.shape[1])
        ]
    )


@pytest.mark.parametrize("blocks", [False, True])
def test_average_precision_matches_sklearn_with_ties(blocks, request):
    if blocks:
        request.getfixturevalue("small_blocks")
    y, s = tag_data()
    ap = average_precision(y, s)
    np.testing.assert_allclose(ap, sklearn_ap(y, s), rtol=1e-12, atol=1e-15)
    assert np.flatnonzero(np.isnan(ap)).tolist() == [3]
    np.testing.assert_array_equal(tags_without_positives(y), [3])
    scored = y.any(axis=0)
    expected = average_precision_score(y[:, scored], s[:, scored], average="macro")
    assert mean_average_precision(y, s) == pytest.approx(expected, rel=1e-12)
    assert mean_average_precision(y.astype(int), s) == mean_average_precision(y, s)


def test_average_precision_hand_computed():
    # ranks: 0.9 (pos) | 0.8 tie (neg, pos) | 0.1 (neg)
    # thresholds 0.9: P = 1, R = 1/2; 0.8: P = 2/3, R = 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    y = np.array([[1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.8], [0.1]])
    assert average_precision(y, s)[0] == pytest.approx(5 / 6, rel=1e-15)
    assert average_precision_score(y[:, 0], s[:, 0]) == pytest.approx(5 / 6, rel=1e-15)
    # breaking the tie in the positive's favour would give 1: ties must form one threshold
    assert average_precision(y, s + np.array([[0], [0], [1e-3], [0]]))[0] == 1.0


def test_roc_auc_matches_sklearn_with_ties():
    y, s = tag_data(seed=1)
    y[:, 8] = True  # a second column without negatives
    auc = roc_auc(y, s)
    for c in range(y.shape[1]):
        if y[:, c].all() or not y[:, c].any():
            assert np.isnan(auc[c])
        else:
            assert auc[c] == pytest.approx(roc_auc_score(y[:, c], s[:, c]), rel=1e-12)
    assert np.isnan(auc).sum() == 3


def test_d_prime_known_values():
    assert d_prime(0.5) == 0.0
    assert d_prime(norm.cdf(1 / np.sqrt(2))) == pytest.approx(1.0, rel=1e-12)
    assert d_prime(1.0) == np.inf  # documented: nothing is clipped
    np.testing.assert_allclose(d_prime(np.array([0.5, norm.cdf(1.0)])), [0.0, np.sqrt(2)])
    assert d_prime(0.8) == pytest.approx(norm.ppf(0.8) * np.sqrt(2.0), rel=1e-14)  # HEAR


def test_f1_scores_match_sklearn():
    y, s = tag_data(seed=2)
    pred = s >= 0.5
    pred[:, 3] = False  # tag 3: never true, never predicted -> F1 0, kept in the macro mean
    micro, macro = f1_scores(y, pred)
    assert micro == pytest.approx(f1_score(y, pred, average="micro", zero_division=0), rel=1e-12)
    assert macro == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), rel=1e-12)
    assert f1_scores(y.astype(int), pred.astype(int)) == (micro, macro)


def test_tuned_thresholds_reach_best_f1(small_blocks):
    y, s = tag_data(seed=3)
    thresholds = tune_thresholds(y, s)
    for c in range(y.shape[1]):
        if not y[:, c].any():
            assert thresholds[c] == np.inf
            continue
        candidates = np.unique(s[:, c])
        f1 = np.array([f1_score(y[:, c], s[:, c] >= t, zero_division=0) for t in candidates])
        best = f1.max()
        assert f1_score(y[:, c], s[:, c] >= thresholds[c]) == pytest.approx(best, rel=1e-12)
        assert thresholds[c] == candidates[np.flatnonzero(f1 >= best - 1e-12).max()]


def test_tagging_scores_against_sklearn():
    y, s = tag_data(n=150, seed=4)
    y_val, s_val = tag_data(n=150, seed=5)
    thresholds = tune_thresholds(y_val, s_val)
    out = tagging_scores(y, s, thresholds=thresholds, n_bootstrap=200, seed=1)
    assert isinstance(out, TaggingScores)
    scored = y.any(axis=0)
    ys, ss = y[:, scored], s[:, scored]
    assert out.n_tags_scored == int(scored.sum()) == 9
    assert out.map == pytest.approx(mean_average_precision(y, s), rel=1e-12)
    assert out.ci95 == bootstrap_map_ci(y, s, n_resamples=200, seed=1)
    both = scored & ~y.all(axis=0)
    expected_auc = roc_auc_score(y[:, both], s[:, both], average="macro")
    assert out.roc_auc == pytest.approx(expected_auc, rel=1e-12)
    assert out.d_prime_macro_auc == pytest.approx(np.sqrt(2) * norm.ppf(expected_auc),
                                                  rel=1e-12)
    per_tag = roc_auc_score(y[:, both], s[:, both], average=None)
    # HEAR's DPrime: the mean of the per-class d' = sqrt(2) * Phi^-1(AUC_c)
    assert out.d_prime == pytest.approx(np.mean(norm.ppf(per_tag) * np.sqrt(2.0)), rel=1e-12)
    half, tuned = ss >= 0.5, ss >= thresholds[scored]
    for got, pred in [
        ((out.micro_f1, out.macro_f1), half),
        ((out.micro_f1_tuned, out.macro_f1_tuned), tuned),
    ]:
        assert got[0] == pytest.approx(f1_score(ys, pred, average="micro", zero_division=0))
        assert got[1] == pytest.approx(f1_score(ys, pred, average="macro", zero_division=0))
    assert json.loads(json.dumps(out.to_dict()))["ci95"] == list(out.ci95)
    plain = tagging_scores(y, s, n_bootstrap=50)
    assert plain.micro_f1_tuned is None and "macro_f1_tuned" not in plain.to_dict()


def slow_bootstrap_maps(y, s, n_resamples, seed):
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y), size=len(y))
        maps.append(mean_average_precision(y[idx], s[idx]))
    return np.array(maps)


@pytest.mark.parametrize("blocks", [False, True])
def test_bootstrap_equals_explicit_resampling(blocks, request):
    if blocks:
        request.getfixturevalue("small_blocks")
    y, s = tag_data(n=40, n_tags=8, seed=6)
    slow = slow_bootstrap_maps(y, s, 60, seed=7)
    fast = tagging._bootstrap_maps(y, s, n_resamples=60, seed=7)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    low, high = bootstrap_map_ci(y, s, n_resamples=60, level=0.9, seed=7)
    assert (low, high) == pytest.approx(tuple(np.percentile(slow, [5, 95])), abs=1e-12)


def test_bootstrap_ci_contains_point_and_is_seeded():
    y, s = tag_data(n=300, n_tags=20, seed=8, decimals=3)
    ci = bootstrap_map_ci(y, s, n_resamples=300, seed=3)
    assert ci[0] < mean_average_precision(y, s) < ci[1]
    assert bootstrap_map_ci(y, s, n_resamples=300, seed=3) == ci
    assert bootstrap_map_ci(y, s, n_resamples=300, seed=4) != ci
    assert np.isnan(bootstrap_map_ci(np.zeros((5, 2)), np.ones((5, 2)), n_resamples=5)).all()


def test_bad_input_is_rejected():
    y, s = tag_data(n=10, n_tags=8)
    with pytest.raises(InputError, match="one shape"):
        average_precision(y, s[:, :1])
    with pytest.raises(InputError, match="0 and 1"):
        roc_auc(y * 2, s)
    with pytest.raises(InputError, match="NaN"):
        tune_thresholds(y, np.where(y, np.nan, s))
    with pytest.raises(InputError, match="0 and 1"):
        f1_scores(y, s)
