"""Figures, the 2-D map, the saved figure data and the HTML report."""

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner

import probekit
from conftest import gaussian_classes
from probekit import Report, plots
from probekit.cli import cli
from probekit.html import render_figures, write_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report():
    X, y = gaussian_classes(600, 12, 10, separation=0.8, seed=3)
    names = np.array([f"class {i}" for i in range(10)])
    return probekit.dual_probe(X, names[y], k=(1, 5, 20), projection=True)


def assert_real_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert float(pixels[..., :3].std()) > 0.02  # not blank


def test_every_figure_is_a_real_png(tmp_path, report):
    paths = plots.write_figures(report, tmp_path)
    assert [p.stem for p in paths] == list(plots.FIGURES)
    for path in paths:
        assert_real_png(path)


@pytest.mark.parametrize("n_classes", [2, 50])
def test_figures_for_few_and_many_classes(tmp_path, n_classes):
    X, y = gaussian_classes(40 * n_classes, 8, n_classes, separation=2.0, seed=4)
    report = probekit.dual_probe(X, y, k=(1, 5), projection=True)
    for path in plots.write_figures(report, tmp_path):
        assert_real_png(path)


def test_figures_are_deterministic_and_other_formats(tmp_path, report):
    first = plots.write_figures(report, tmp_path / "a")
    second = plots.write_figures(report, tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    svg = plots.write_figures(report, tmp_path / "svg", fmt="svg")
    assert svg[0].read_text().lstrip().startswith("<?xml")
    pdf = plots.write_figures(report, tmp_path / "pdf", fmt="pdf")
    assert pdf[0].read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="png, svg or pdf"):
        plots.write_figures(report, tmp_path, fmt="gif")


def test_figure_functions_return_figures(report):
    import matplotlib.figure

    for name in plots.FIGURES:
        figure = getattr(plots, name)(report)
        assert isinstance(figure, matplotlib.figure.Figure)
        assert figure.axes[0].get_title()


def test_projection_info_and_pca_fallback(monkeypatch):
    X, y = gaussian_classes(300, 8, 3, separation=3.0, seed=5)
    is_test = np.arange(300) % 5 == 0
    import builtins

    real_import = builtins.__import__

    def no_umap(name, *args, **kwargs):
        if name == "umap" or name.startswith("umap."):
            raise ImportError("no umap")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_umap)
    arrays, info = plots.project_2d(X, y, is_test, seed=0)
    assert info["method"] == "PCA" and "umap extra" in info["warning"]
    assert arrays["projection_xy"].shape == (300, 2)
    assert 0.5 < info["trustworthiness"] <= 1.0
    assert arrays["projection_is_test"].sum() == 60


def test_projection_samples_large_inputs_by_class():
    codes = np.repeat(np.arange(4), [5000, 3000, 1500, 500])
    rows = plots._stratified_sample(codes, 2000, seed=0)
    counts = np.bincount(codes[rows])
    assert abs(len(rows) - 2000) <= 4 and counts.tolist() == [1000, 600, 300, 100]


def test_largest_confusions_and_recall():
    counts = np.array([[8, 2, 0], [0, 5, 5], [1, 0, 9]])
    names = ["a", "b", "c"]
    assert plots.largest_confusions(counts, names, top=2) == [("b", "c", 0.5), ("a", "b", 0.2)]
    np.testing.assert_allclose(plots.per_class_recall(counts), [0.8, 0.5, 0.9])


def test_save_load_round_trip(tmp_path, report):
    json_path, sidecar = report.save(tmp_path / "r.json")
    assert sidecar == tmp_path / "r.npz"
    loaded = Report.load(json_path)
    assert loaded.to_dict() == report.to_dict()
    assert set(loaded.arrays) == set(report.arrays)
    for key, value in report.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
    confusion = report.arrays["confusion_linear"]
    assert confusion.sum() == report.input["n_test"]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(report.linear["accuracy"])


def test_html_is_self_contained(tmp_path, report):
    path = write_html(report, tmp_path / "report.html")
    text = path.read_text()
    assert text.count("data:image/png;base64,") == len(plots.FIGURES)
    for marker in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert marker not in text
    assert "Reading." in text and "Geometry of the training rows" in text
    assert "class 3" in text
    assert render_figures(report).keys() == set(plots.FIGURES)


def test_cli_plots_html_and_rerender(tmp_path):
    X, y = gaussian_classes(300, 8, 4, separation=2.0, seed=6)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                                 "--out", str(tmp_path / "r.json"), "--plots",
                                 str(tmp_path / "figs"), "--html", str(tmp_path / "r.html"),
                                 "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / "r.npz").exists() and (tmp_path / "r.html").exists()
    assert json.loads((tmp_path / "r.json").read_text())["protocol"]["projection"]["method"]
    again = runner.invoke(cli, ["plot", str(tmp_path / "r.json"), "--out",
                                str(tmp_path / "again")])
    assert again.exit_code == 0, (again.output, again.exception)
    for path in sorted((tmp_path / "figs").iterdir()):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes()
    (tmp_path / "r.npz").unlink()
    missing = runner.invoke(cli, ["plot", str(tmp_path / "r.json"), "--out",
                                  str(tmp_path / "x")])
    assert missing.exit_code == 2 and "missing" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_default_evaluate_does_not_import_umap():
    import subprocess
    import sys

    code = ("import sys, numpy as np, probekit\n"
            "X = np.random.default_rng(0).normal(size=(60, 4)); y = np.arange(60) % 3\n"
            "probekit.dual_probe(X, y, k=(1, 3))\n"
            "assert 'umap' not in sys.modules and 'probekit.plots' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_review_regressions_for_figures(tmp_path):
    # a class name with "$", classes absent from the test set, 22 classes (colour bar rule)
    rng = np.random.default_rng(7)
    n_classes = 22
    y = np.arange(1100) % n_classes
    X = rng.normal(size=(n_classes, 8))[y] * 2 + rng.normal(size=(1100, 8))
    names = np.array([f"price_${i}" for i in range(n_classes)])
    test = y[:300] >= 3  # classes 0-2 have no test rows
    report = probekit.dual_probe(X[300:], names[y[300:]], X_test=X[:300][test],
                                 y_test=names[y[:300]][test], k=(1, 5), projection=True)
    paths = plots.write_figures(report, tmp_path / "png")
    assert len(paths) == len(plots.FIGURES)
    svg_a = plots.write_figures(report, tmp_path / "a", fmt="svg")
    svg_b = plots.write_figures(report, tmp_path / "b", fmt="svg")
    for a, b in zip(svg_a, svg_b, strict=True):
        assert a.read_bytes() == b.read_bytes()
    counts = report.arrays["k_occurrence"]
    figure = plots.k_occurrence(report)
    line = [artist for artist in figure.axes[0].lines if artist.get_linestyle() == "--"][0]
    assert line.get_xdata()[0] == pytest.approx(counts.mean())


def test_sidecar_guards(tmp_path, report):
    with pytest.raises(probekit.InputError, match="as .json"):
        report.save(tmp_path / "r.npz")
    report.save(tmp_path / "one.json")
    other = probekit.dual_probe(*gaussian_classes(200, 6, 3, seed=9), k=(1,))
    other.save(tmp_path / "two.json")
    (tmp_path / "one.npz").replace(tmp_path / "two.npz")
    with pytest.raises(probekit.InputError, match="does not belong"):
        Report.load(tmp_path / "two.json")
