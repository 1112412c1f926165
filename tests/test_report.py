import json

import numpy as np
import pytest

from conftest import gaussian_classes
from probekit import Report, dual_probe
from probekit.report import write_atomically


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


def _with(report, linear_accuracy, knn_accuracy):
    data = report.to_dict()
    data["linear"]["accuracy"] = linear_accuracy
    data["knn"]["best"]["accuracy"] = knn_accuracy
    return Report.from_dict(data)


@pytest.mark.parametrize(
    ("linear", "knn", "phrase"),
    [
        (0.90, 0.70, "globally linearly separable but locally mixed"),
        (0.90, 0.89, "tight, well-separated clusters"),
        (0.80, 0.90, "kNN beats linear"),
        (0.90, 0.86, "mostly separable"),
    ],
)
def test_reading_the_two_probes(report, linear, knn, phrase):
    assert phrase in _with(report, linear, knn).reading()


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text("old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken)
    with pytest.raises(OSError):
        write_atomically(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
