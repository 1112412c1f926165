"""probekit demo: the main job on the embeddings shipped inside the package."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from probekit.cli import cli
from probekit.demo import load_demo_data, run_demo


def test_the_shipped_spaces_load_without_pickle_and_share_their_rows():
    data = load_demo_data()
    assert set(data.spaces) == {"frozen", "supcon"}
    for train, test in data.spaces.values():
        assert train.shape == (len(data.train_labels), 256) and train.dtype == np.float16
        assert test.shape == (len(data.test_labels), 256)
    assert len(set(data.train_labels.tolist())) == 35  # words


def test_demo_judges_both_spaces_and_compares_them_with_paired_tests():
    result = run_demo(figures=False)
    frozen, tuned = result.reports["frozen"], result.reports["supcon"]
    # the tuned space is the better one by a margin no library release can move
    assert tuned.knn["weighted"]["20"]["accuracy"] > 0.9 > 0.75 > \
        frozen.knn["weighted"]["20"]["accuracy"]
    assert tuned.linear["accuracy"] > frozen.linear["accuracy"] + 0.05
    frame = result.comparison
    linear = frame[(frame.probe == "linear") & (frame.metric == "accuracy")].iloc[0]
    assert linear.p_mcnemar < 1e-6 and linear.delta_ci95_low > 0 and linear.better == "B"
    assert "tight, well-separated clusters" in tuned.reading()


def test_cli_demo_prints_the_summary_the_comparison_and_where_the_files_are(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--no-figures",
                                      "-q"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "# probekit dual probe of B (supcon)" in out and "**Reading:**" in out
    assert "# probekit compare: A = frozen, B = supcon" in out and "McNemar p" in out
    assert f"{tmp_path / 'd' / 'comparison.csv'}" in out
    report = json.loads((tmp_path / "d" / "supcon.json").read_text())
    assert report["input"]["n_test"] == 1330
    assert not (tmp_path / "d" / "supcon.html").exists()


@pytest.mark.slow
def test_cli_demo_writes_figures_and_html(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "supcon.html").read_text()
    assert "<img" in html and "Reading." in html
    names = {path.stem for path in (tmp_path / "figures" / "supcon").iterdir()}
    assert {"projection", "knn_curve", "confusion", "per_class"} <= names


def test_demo_is_listed_in_the_help():
    assert "demo" in CliRunner().invoke(cli, ["--help"]).output
