"""Figures, the 2-D map, the saved figure data and the HTML report."""

import html
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner

import probekit
from conftest import gaussian_classes
from probekit import Report
from probekit.cli import cli
from probekit.geometry import projection
from probekit.render import plots
from probekit.render.html import _key_value_table, render, render_figures, write_html

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


@pytest.mark.slow
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
    arrays, info = projection.project_2d(X, y, is_test, seed=0)
    assert info["method"] == "PCA" and "umap extra" in info["warning"]
    assert arrays["projection_xy"].shape == (300, 2)
    assert 0.5 < info["trustworthiness"] <= 1.0
    assert arrays["projection_is_test"].sum() == 60


def test_projection_samples_large_inputs_by_class():
    codes = np.repeat(np.arange(4), [5000, 3000, 1500, 500])
    rows = projection.stratified_sample(codes, 2000, seed=0)
    counts = np.bincount(codes[rows])
    assert abs(len(rows) - 2000) <= 4 and counts.tolist() == [1000, 600, 300, 100]


def pairs_of(matrix) -> np.ndarray:
    """The (true, predicted, count) rows of a dense confusion matrix."""
    matrix = np.asarray(matrix)
    rows, cols = np.nonzero(matrix)
    return np.column_stack([rows, cols, matrix[rows, cols]]).astype(np.int64)


def test_largest_confusions_and_recall():
    counts = np.array([[8, 2, 0], [0, 5, 5], [1, 0, 9]])
    names = ["a", "b", "c"]
    assert plots.largest_confusions(pairs_of(counts), names, top=2) == [
        ("b", "c", 0.5, 5, 10), ("a", "b", 0.2, 2, 10)]
    np.testing.assert_allclose(plots.per_class_recall(pairs_of(counts), 3), [0.8, 0.5, 0.9])
    np.testing.assert_array_equal(plots.dense_confusion(pairs_of(counts), np.arange(3)), counts)
    np.testing.assert_array_equal(plots.dense_confusion(pairs_of(counts), np.array([0, 2])),
                                  [[8, 0], [1, 9]])
    assert plots.confused_classes(pairs_of(counts), 3, 2).tolist() == [0, 1]


def test_confusion_pairs_equal_scikit_learn_and_stay_small():
    from sklearn.metrics import confusion_matrix

    from probekit.probes.metrics import confusion_pairs

    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    pairs = confusion_pairs(truth, predicted, 7)
    np.testing.assert_array_equal(plots.dense_confusion(pairs, np.arange(7)),
                                  confusion_matrix(truth, predicted, labels=range(7)))
    many = confusion_pairs(np.arange(1000) % 500, np.arange(1000) % 499, 7000)
    assert many.shape[0] <= 1000  # one row per occupied cell, not 7000 x 7000


def test_the_confusion_figure_of_many_classes_shows_the_most_confused(report):
    import dataclasses

    n = 300
    truth = np.repeat(np.arange(n), 4)
    predicted = truth.copy()
    predicted[::4] = (truth[::4] + 1) % n  # every class loses one of four samples...
    predicted[1:40:4] = 7  # ...and ten classes lose two
    from probekit.probes.metrics import confusion_pairs

    pairs = confusion_pairs(truth, predicted, n)
    info = dict(report.input, classes=[f"c{i}" for i in range(n)])
    many = dataclasses.replace(report, input=info, arrays=dict(
        report.arrays, confusion_linear=pairs, confusion_knn=pairs))
    figure = plots.confusion(many, "linear")
    assert "the 40 of 300 classes with the most errors" in figure.axes[0].get_title()
    assert figure.axes[0].images[0].get_array().shape == (40, 40)


def test_save_load_round_trip(tmp_path, report):
    json_path, sidecar = report.save(tmp_path / "r.json")
    assert sidecar == tmp_path / "r.npz"
    loaded = Report.load(json_path)
    assert loaded.to_dict() == report.to_dict()
    assert set(loaded.arrays) == set(report.arrays)
    for key, value in report.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
    pairs = report.arrays["confusion_linear"]
    assert pairs[:, 2].sum() == report.input["n_test"]
    right = pairs[pairs[:, 0] == pairs[:, 1], 2].sum()
    assert right / pairs[:, 2].sum() == pytest.approx(report.linear["accuracy"])


@pytest.mark.slow
def test_html_is_self_contained(tmp_path, report):
    path = write_html(report, tmp_path / "report.html")
    text = path.read_text()
    assert text.count("data:image/png;base64,") == len(plots.FIGURES)
    for marker in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert marker not in text
    assert "Reading." in text and "Geometry of the training rows" in text
    assert "class 3" in text
    assert render_figures(report).keys() == set(plots.FIGURES)


@pytest.mark.slow
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
            "assert 'umap' not in sys.modules and 'probekit.render.plots' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
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


# ---------------------------------------------------------------------------- figure review


def _rgb(colour):
    import matplotlib.colors

    return np.array(matplotlib.colors.to_rgb(colour))


def _luminance(rgb):
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


@pytest.mark.parametrize("n", range(9, 21))
def test_up_to_20_classes_get_distinct_colours_visible_on_white(n):
    colours = plots.class_colours(n)
    rgb = np.array([_rgb(c) for c in colours])
    assert len({tuple(c) for c in rgb}) == n
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + 9 * np.eye(n)
    assert distances.min() > 0.2
    for colour in rgb:  # WCAG contrast with white at least 2:1 (no beige, mint, lavender)
        assert 1.05 / (_luminance(colour) + 0.05) >= 2.0, colour


def test_few_classes_keep_okabe_ito_and_many_a_colour_map():
    assert set(plots.class_colours(8)) == set(plots.OKABE_ITO)
    assert plots.class_colours(3) == [plots.OKABE_ITO[0], plots.OKABE_ITO[1],
                                      plots.OKABE_ITO[2]]
    assert len(plots.class_colours(21)) == 21


def test_projection_colours_markers_and_legend(report):
    figure = plots.projection(report)
    ax = figure.axes[0]
    train = ax.collections[0::2]
    test = ax.collections[1::2]
    assert len(train) == len(test) == 10
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 4)) for c in train}
    assert len(colours) == 10  # classes 0 and 8 no longer share a colour
    shapes = {len(c.get_paths()[0].vertices) for c in train}
    assert len(shapes) == 1  # one marker (the dot) for every class's training points
    texts = [t.get_text() for legend in _legends(ax) for t in legend.get_texts()]
    assert "train (dot)" in texts and "test (cross)" in texts
    assert all(f"class {i}" in texts for i in range(10))
    # the class legend sits outside the axes: the saved figure's tight box must take it in
    renderer = figure.canvas.get_renderer()
    tight = figure.get_tightbbox(renderer)
    for legend in _legends(ax):
        box = legend.get_window_extent(renderer).transformed(figure.dpi_scale_trans.inverted())
        assert box.x1 <= tight.x1 + 1e-6


def _legends(ax):
    from matplotlib.legend import Legend

    return [artist for artist in ax.get_children() if isinstance(artist, Legend)]


def test_class_names_at_centres_do_not_overlap():
    X, y = gaussian_classes(400, 8, 20, separation=0.6, seed=11)
    names = np.array([f"long class name {i}" for i in range(20)])
    report = probekit.dual_probe(X, names[y], k=(1, 5), projection=True)
    figure = plots.projection(report)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    labels = [t for t in figure.axes[0].texts if t.get_text().startswith("long class")]
    assert len(labels) == 20
    boxes = [label.get_window_extent(renderer) for label in labels]
    overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert overlaps == 0


def _with_confusions(report, linear, knn):
    import dataclasses

    arrays = dict(report.arrays, confusion_linear=pairs_of(linear), confusion_knn=pairs_of(knn))
    return dataclasses.replace(report, arrays=arrays)


def test_per_class_axis_fits_the_data(report):
    n = 10
    wrong = np.arange(n)  # class i: 100 - i right, i predicted as the next class
    linear = np.diag(100 - wrong)
    linear[np.arange(n), (np.arange(n) + 1) % n] = wrong
    knn = np.diag(np.full(n, 100))
    recall = 100 * plots.per_class_recall(pairs_of(linear), n)
    assert recall.min() == 91 and recall.max() == 100
    low, high = plots.per_class(_with_confusions(report, linear, knn)).axes[0].get_xlim()
    assert 85 <= low < 91 and high == 100  # not 0 to 100
    poor = knn.copy()
    poor[0, :2] = (1, 49)  # class 0: recall 2 %
    low, high = plots.per_class(_with_confusions(report, poor, knn)).axes[0].get_xlim()
    assert low == 0 and high == 100  # recall 2 % to 100 %: clipped to [0, 100]
    assert plots.recall_range(np.array([40.0, 60.0])) == (38.0, 62.0)
    assert plots.recall_range(np.array([np.nan])) == (0.0, 100.0)


def test_confusions_in_words(report):
    counts = np.array([[33, 2], [0, 35]])
    assert plots.largest_confusions(pairs_of(counts), ["8", "1"]) == [
        ("8", "1", pytest.approx(2 / 35), 2, 35)]
    assert plots.confusion_phrase("8", "1", 2 / 35) == "5.7 % of class 8 predicted as 1"
    assert (plots.confusion_phrase("class 3", "class 5", 0.25)
            == "25.0 % of ‘class 3’ predicted as ‘class 5’")
    figure = plots.confusion(report)
    caption = " ".join(text.get_text() for text in figure.texts)
    key, _ = plots.better_probe(report)
    names = [str(name) for name in report.input["classes"]]
    first = plots.largest_confusions(report.arrays[key], names)[0]
    assert plots.confusion_phrase(*first[:3]) in caption and "→" not in caption
    page = render(report, {})
    assert f"<li>{html.escape(plots.confusion_phrase(*first[:3]))} (" in page
    assert "&rarr;" not in page


def test_html_protocol_and_input_are_tables(report):
    page = render(report, {})
    assert "<pre" not in page and "{\n" not in page
    for key, value in (("split", "holdout"), ("loo", "no"), ("metric", "cosine"),
                       ("bootstrap.resamples", "1000"), ("projection.method", "UMAP (cosine)"),
                       ("n_classes", "10"), ("k", "1, 5, 20")):
        assert f"<tr><td>{key}</td><td>{html.escape(value)}</td></tr>" in page, key
    assert "classes (train/test samples)</td><td>class\u00a00" not in page  # names kept
    assert "class 0\u00a0(" in page
    trust = report.protocol["projection"]["trustworthiness"]
    assert f"<td>{trust:.4g}</td>" in page
    table = _key_value_table({"grid": list(range(40)), "flag": True, "none": None,
                              "nested": {"inner": {"deep": 1e-5}}, "ratio": 10000.0})
    assert "… 28 more" in table and "<td>yes</td>" in table and "<td>–</td>" in table
    assert "<td>nested.inner.deep</td><td>1e-05</td>" in table
    assert "<td>ratio</td><td>10000</td>" in table


def test_umap_kernels_are_cached_on_disk():
    pytest.importorskip("umap")
    from numba.core.caching import NullCache

    cached = projection.cache_umap_kernels()
    assert "umap.umap_.smooth_knn_dist" in cached
    assert "umap.layouts._nb_optimize_layout_euclidean_single_epoch" in cached
    import importlib

    for name in cached:
        module, _, attribute = name.rpartition(".")
        kernel = getattr(importlib.import_module(module), attribute)
        assert not isinstance(kernel._cache, NullCache)


def test_umap_runs_on_exact_neighbours_without_warnings():
    pytest.importorskip("umap")
    import warnings

    X, y = gaussian_classes(200, 8, 4, separation=3.0, seed=12)
    indices, distances = projection.cosine_neighbours(X, 5)
    assert indices.shape == distances.shape == (200, 5)
    assert (indices[:, 0] == np.arange(200)).all() and np.allclose(distances[:, 0], 0, atol=1e-6)
    assert (np.diff(distances, axis=1) >= 0).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays, info = projection.project_2d(X, y, np.arange(200) % 5 == 0, seed=0)
    assert info["method"] == "UMAP (cosine)" and info["trustworthiness"] > 0.9
    assert not [w for w in caught if "precomputed_knn" in str(w.message)]
    zero = X.copy()
    zero[3] = 0.0  # cosine neighbours undefined: umap-learn searches itself
    assert projection.cosine_neighbours(zero, 5) == (None, None, None)


def test_html_of_tags_names_the_map_metric():
    rng = np.random.default_rng(0)
    Y = rng.random((300, 5)) < 0.3
    Y[:, 0] |= ~Y.any(axis=1)
    X = (Y @ rng.normal(size=(5, 10)) + 0.5 * rng.normal(size=(300, 10))).astype(np.float32)
    report = probekit.dual_probe(X, Y, k=(1, 5), n_bootstrap=50, geometry=False)
    page = render(report, {"knn_curve": PNG_MAGIC})
    assert "<figcaption>kNN mAP vs k and the linear probe</figcaption>" in page
    assert "<pre" not in page and "<td>tags (train/test samples)</td>" in page
