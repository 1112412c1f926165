import json

import numpy as np
import pytest

from conftest import gaussian_classes
from probekit import Report, dual_probe
from probekit.files import write_atomically


@pytest.fixture(scope="module")
def report():
    X, y = gaussian_classes(300, 12, 10, separation=1.5, seed=0)
    return dual_probe(X, y, k=(1, 5, 10))


def test_json_round_trip(tmp_path, report):
    path = tmp_path / "sub" / "report.json"
    text = report.to_json(path)
    assert path.read_text() == text
    loaded = Report.from_json(path)
    assert loaded.to_dict() == report.to_dict()
    assert json.loads(text)["reading"] == report.reading()
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary files left


def test_to_frame_has_a_row_per_metric(report):
    frame = report.to_frame()
    assert set(frame.columns) == {"probe", "vote", "k", "metric", "value", "ci95_low",
                                  "ci95_high", "std"}
    # 3 k x 2 votes x 4 metrics + linear 4 metrics
    assert len(frame) == 3 * 2 * 4 + 4
    row = frame[(frame.probe == "knn") & (frame.vote == "weighted") & (frame.k == 5)
                & (frame.metric == "accuracy")].iloc[0]
    assert row.value == report.knn["weighted"]["5"]["accuracy"]
    assert [row.ci95_low, row.ci95_high] == report.knn["weighted"]["5"]["ci95"]
    linear = frame[(frame.probe == "linear") & (frame.metric == "macro_f1")].iloc[0]
    assert linear.value == report.linear["macro_f1"] and np.isnan(linear.ci95_low)


def test_markdown_shows_both_probes_and_the_reading(report):
    text = report.to_markdown()
    assert "| linear | C=" in text and "| kNN | k=10 weighted |" in text
    assert "top-5" in text and "**Reading:**" in text and "Best kNN" in text


def _with(report, linear, knn, low, high, p_value):
    data = report.to_dict()
    data["linear_vs_knn"].update(linear=linear, knn=knn, difference=knn - linear,
                                 difference_ci95=[low, high], p_value=p_value)
    return Report.from_dict(data)


@pytest.mark.parametrize(
    ("linear", "knn", "low", "high", "p_value", "phrase"),
    [
        (0.90, 0.70, -0.24, -0.16, 1e-6, "globally linearly separable but locally mixed"),
        (0.90, 0.89, -0.018, 0.004, 0.4, "tight, well-separated clusters"),
        (0.80, 0.90, 0.06, 0.14, 1e-4, "kNN beats linear"),
        (0.90, 0.86, -0.07, -0.01, 0.01, "mostly separable"),
        # iris: two test samples apart, a wide interval, no significant difference
        (0.90, 0.967, -0.033, 0.20, 0.62, "no significant difference (McNemar p = 0.62"),
        # a large gap that the test cannot confirm is not called a verdict either
        (0.90, 0.70, -0.45, 0.05, 0.08, "cannot tell the two probes apart"),
    ],
)
def test_reading_follows_the_paired_evidence(report, linear, knn, low, high, p_value, phrase):
    text = _with(report, linear, knn, low, high, p_value).reading()
    assert phrase in text
    if p_value >= 0.05 and not (-0.02 <= low and high <= 0.02):
        for verdict in ("separable", "beats", "clusters", "leads"):
            assert verdict not in text


def test_reading_compares_a_setting_fixed_in_advance_on_the_paired_test_rows():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    report = dual_probe(X, y, geometry=False, save_predictions=True)
    comparison = report.linear_vs_knn
    assert (comparison["vote"], comparison["k"], comparison["n_paired"]) == ("weighted", 20, 30)
    assert comparison["knn"] == report.knn["weighted"]["20"]["accuracy"]
    assert comparison["linear"] == report.linear["accuracy"]
    correct_linear = report.arrays["correct_linear"]
    settings = [str(s) for s in report.arrays["correct_knn_settings"]]
    correct_knn = report.arrays["correct_knn"][:, settings.index("weighted@20")]
    b = int(np.sum(correct_linear & ~correct_knn))
    c = int(np.sum(~correct_linear & correct_knn))
    from scipy.stats import binomtest

    assert (comparison["only_linear"], comparison["only_knn"]) == (b, c)
    assert comparison["p_value"] == pytest.approx(binomtest(min(b, c), b + c).pvalue, rel=1e-9)
    assert "no significant difference" in report.reading()
    assert "fixed in advance" in report.reading()


def test_reading_takes_the_nearest_k_when_20_was_not_run():
    X, y = gaussian_classes(200, 8, 4, separation=2.0, seed=1)
    assert dual_probe(X, y, k=(1, 5, 100), geometry=False).linear_vs_knn["k"] == 5  # log scale
    assert dual_probe(X, y, k=(1, 5, 50), geometry=False).linear_vs_knn["k"] == 50
    assert dual_probe(X, y, k=(1, 30), geometry=False).linear_vs_knn["k"] == 30


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text("old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken)
    with pytest.raises(OSError):
        write_atomically(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
