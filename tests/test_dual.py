import json

import numpy as np
import pytest

import probekit
from conftest import gaussian_classes
from probekit import InputError, dual_probe, knn_probe, linear_probe
from probekit.splits import stratified_holdout


def without_timings(report):
    data = report.to_dict()
    data.pop("timings")
    return json.dumps(data)


def test_holdout_report_shape(blobs):
    X, y = blobs
    report = dual_probe(X, y)
    data = report.to_dict()
    assert data["probekit_version"] == probekit.__version__
    assert data["input"]["n_train"] + data["input"]["n_test"] == len(y)
    assert data["input"]["dim"] == 16 and data["input"]["n_classes"] == 4
    assert data["protocol"]["split"] == "holdout" and data["protocol"]["seed"] == 0
    assert data["protocol"]["metric"] == "cosine" and data["protocol"]["temperature"] == 0.07
    assert data["protocol"]["k"] == [1, 5, 10, 20, 50, 100]
    for vote in ("majority", "weighted"):
        for k in data["protocol"]["k"]:
            scores = data["knn"][vote][str(k)]
            assert 0 <= scores["accuracy"] <= 1
            assert scores["ci95"][0] <= scores["accuracy"] <= scores["ci95"][1]
            assert {"balanced_accuracy", "macro_f1"} <= set(scores)
            assert "top5_accuracy" not in scores  # fewer than 10 classes
    assert data["knn"]["backend"] in ("faiss-cpu", "numpy", "torch", "faiss-gpu")
    linear = data["linear"]
    assert linear["C"] in linear["C_grid"] and len(linear["val_accuracy"]) == 9
    assert linear["accuracy"] > 0.95 and data["knn"]["best"]["accuracy"] > 0.95
    assert set(data["timings"]) >= {"knn_s", "linear_s", "total_s"}
    assert "Reading" not in data["reading"] and "kNN" in data["reading"]


def test_dual_numbers_equal_the_single_probes_on_the_same_split():
    X, y = gaussian_classes(400, 12, 5, separation=0.8, seed=1)
    report = dual_probe(X, y, k=(1, 7), seed=3)
    train, test = stratified_holdout(y, test_size=0.2, seed=3)
    knn = knn_probe(X[train], y[train], X[test], y[test], k=(1, 7), seed=3)
    linear = linear_probe(X[train], y[train], X[test], y[test], seed=3)
    for vote in ("majority", "weighted"):
        for k in (1, 7):
            assert report.knn[vote][str(k)]["accuracy"] == getattr(knn, vote)[k].accuracy
    assert report.linear["accuracy"] == linear.scores.accuracy
    assert report.linear["C"] == linear.predictions.C


def test_given_split_and_determinism():
    X, y = gaussian_classes(500, 16, 12, separation=1.0, seed=2)
    first = dual_probe(X[:400], y[:400], X_test=X[400:], y_test=y[400:])
    second = dual_probe(X[:400], y[:400], X_test=X[400:], y_test=y[400:])
    assert first.protocol["split"] == "given"
    assert first.input["n_train"] == 400 and first.input["n_test"] == 100
    assert "top5_accuracy" in first.linear and "top5_accuracy" in first.knn["majority"]["5"]
    assert without_timings(first) == without_timings(second)
    other_seed = dual_probe(X[:400], y[:400], X_test=X[400:], y_test=y[400:], seed=1)
    assert other_seed.linear["ci95"] != first.linear["ci95"] or \
        other_seed.knn["majority"]["1"]["ci95"] != first.knn["majority"]["1"]["ci95"]


def test_string_labels_give_the_same_numbers(blobs):
    X, y = blobs
    names = np.array(["dog bark", "siren", "rain", "speech"])
    named = dual_probe(X, names[y])
    coded = dual_probe(X, y)
    assert named.input["classes"] == ["dog bark", "rain", "siren", "speech"]
    assert named.knn == coded.knn
    assert named.linear["accuracy"] == coded.linear["accuracy"]


def test_kfold_reports_mean_and_std():
    X, y = gaussian_classes(300, 8, 3, separation=0.7, seed=4)
    report = dual_probe(X, y, folds=4, k=(1, 5))
    assert report.protocol["split"] == "kfold" and report.protocol["folds"] == 4
    assert report.input["n_test"] == 300
    scores = report.knn["majority"]["5"]
    assert 0 <= scores["accuracy_std"] < 0.2 and "macro_f1_std" in scores
    assert len(report.linear["C_per_fold"]) == 4 and len(report.linear["folds"]) == 4
    assert report.linear["C"] in report.linear["C_per_fold"]
    assert "±" in report.to_markdown()


def test_leave_one_out_covers_every_sample():
    X, y = gaussian_classes(200, 8, 4, seed=5)
    report = dual_probe(X, y, loo=True, k=(1, 3))
    assert report.protocol["loo"] and report.input["n_knn_test"] == 200
    reference = knn_probe(X, y, loo=True, k=(1, 3))
    assert report.knn["majority"]["3"]["accuracy"] == reference.majority[3].accuracy


def test_ten_samples_two_classes():
    X, y = gaussian_classes(10, 4, 2, separation=4.0, seed=6)
    report = dual_probe(X, y)
    assert report.input["n_test"] == 2
    assert report.protocol["k"] == [1, 5]
    assert any("k=10, 20, 50, 100 dropped" in note for note in report.warnings)
    assert report.linear["accuracy"] == 1.0
    assert report.to_markdown().count("| kNN |") == 4


def test_test_classes_unseen_in_training_are_warned_and_wrong():
    X, y = gaussian_classes(300, 8, 4, seed=7)
    y_test = y[200:].copy()
    y_test[:10] = 9
    report = dual_probe(X[:200], y[:200], X_test=X[200:], y_test=y_test)
    assert any("never occur in training" in note and "10 samples" in note
               for note in report.warnings)
    assert report.input["n_classes"] == 5
    assert report.linear["accuracy"] <= 0.9 + 1e-9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y": np.zeros(300)}, "single class"),
        ({"y": np.r_[np.zeros(299), 1]}, r"'1(\.0)?' \(1\)"),
        ({"y": np.arange(299) % 3}, "rows but labels have"),
        ({"X_test": np.ones((5, 3)), "y_test": np.zeros(5)}, "dimensions"),
        ({"X_test": np.ones((5, 16))}, "both X_test and y_test"),
        ({"loo": True, "X_test": np.ones((5, 16)), "y_test": np.zeros(5)}, "leave-one-out"),
        ({"loo": True, "folds": 3}, "not both"),
        ({"folds": 1}, "at least 2"),
        ({"metric": "hamming"}, "unknown metric"),
        ({"test_size": 0.0}, "fraction"),
        ({"k": (0,)}, "positive"),
    ],
)
def test_bad_input_is_one_clear_error(blobs, kwargs, message):
    X, y = blobs
    arguments = {"y": y, **kwargs}
    with pytest.raises(InputError, match=message) as error:
        dual_probe(X, **arguments)
    assert "\n" not in str(error.value)


def test_memory_mapped_float64_input(tmp_path, blobs):
    X, y = blobs
    np.save(tmp_path / "x.npy", X.astype(np.float64))
    mapped = probekit.load_embeddings(tmp_path / "x.npy")
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float64
    from_map = dual_probe(mapped, y)
    in_memory = dual_probe(X.astype(np.float64), y)
    assert from_map.knn == in_memory.knn and from_map.linear == in_memory.linear


def test_import_and_cpu_run_do_not_import_torch_or_umap():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, probekit\n"
        "assert 'torch' not in sys.modules and 'umap' not in sys.modules\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.normal(size=(60, 4)); y = np.arange(60) % 3\n"
        "probekit.dual_probe(X, y, k=(1, 3))\n"
        "import os\n"
        "if not os.path.exists('/dev/nvidiactl'):\n"
        "    assert 'torch' not in sys.modules, 'auto backend imported torch on a CPU machine'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_zero_rows_are_counted_over_the_whole_input():
    X, y = gaussian_classes(60, 8, 3, seed=8)
    X[:5] = 0
    with pytest.raises(InputError, match="embeddings: 5 of 60 rows are all zeros"):
        dual_probe(X, y)
    with pytest.raises(InputError, match="test embeddings: 5 of 60 rows"):
        dual_probe(gaussian_classes(60, 8, 3, seed=9)[0], y, X_test=X, y_test=y)
    assert dual_probe(X, y, metric="euclidean", k=(1,)).knn["backend"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_bootstrap": 0}, "bootstrap"), ({"seed": -1}, "seed"), ({"folds": 0}, "folds"),
    ({"temperature": float("nan")}, "temperature"), ({"C": [float("inf")]}, "finite"),
    ({"max_iter": 0}, "max_iter"), ({"val_size": 0.0}, "validation size"),
])
def test_out_of_range_parameters(blobs, kwargs, message):
    X, y = blobs
    with pytest.raises(InputError, match=message):
        dual_probe(X, y, **kwargs)


def test_kfold_summary_line():
    X, y = gaussian_classes(240, 6, 3, seed=10)
    text = dual_probe(X, y, folds=4, k=(1,)).to_markdown()
    assert "240 samples in 4 folds (180 train / 60 test per fold)" in text


def count_searches(monkeypatch) -> list:
    """Record (queries, k) of every neighbour search, whoever calls it and however it imported
    ``search``: the backends' runners are looked up at each call, so patching them sees all."""
    from probekit import neighbours

    calls = []
    for name in ("_search_faiss", "_search_numpy", "_search_torch"):
        original = getattr(neighbours, name)

        def counting(queries, database, k, *args, _original=original):
            calls.append((len(queries), len(database), k))
            return _original(queries, database, k, *args)

        monkeypatch.setattr(neighbours, name, counting)
    return calls


def test_geometry_reuses_the_probe_graph_and_searches_once(monkeypatch):
    calls = count_searches(monkeypatch)
    X, y = gaussian_classes(300, 8, 4, separation=1.0, seed=11)
    report = dual_probe(X, y, k=(1, 20))
    # one search at k_max (60 test queries against 240 training rows) serves the probe and the
    # graph diagnostics; two more belong to the geometry alone: MAP@R ranks its sampled
    # queries to depth R_max + 1 (the largest class in train, 60 rows), and hubness needs a
    # leave-one-out graph (the 240 sampled training rows, k = 10 plus the row itself)
    assert calls == [(60, 240, 20), (240, 240, 60), (240, 240, 11)]
    geometry = report.geometry
    assert geometry["protocol"]["graph"].startswith("queries (test)")
    assert geometry["protocol"]["n"] == report.input["n_train"]
    assert 0 <= geometry["ncc_linear_agreement"] <= 1
    assert 0 <= geometry["knn_label_agreement"] <= 1


def test_leave_one_out_geometry_searches_no_more_than_the_probe(monkeypatch):
    calls = count_searches(monkeypatch)
    X, y = gaussian_classes(300, 8, 4, separation=1.0, seed=11)
    dual_probe(X, y, k=(1, 20), loo=True)
    # the probe's leave-one-out graph also serves hubness; MAP@R has its own deeper search
    assert calls == [(300, 300, 21), (300, 300, 75)]


def test_graph_free_geometry_equals_diagnose_on_the_training_rows():
    X, y = gaussian_classes(300, 8, 4, separation=1.0, seed=12)
    report = dual_probe(X, y, k=(1, 10))
    train, _ = stratified_holdout(y, test_size=0.2, seed=0)
    direct = probekit.diagnose(X[train], y[train]).values
    for key in ("alignment", "uniformity", "rankme", "nc1", "cdnv", "silhouette",
                "davies_bouldin", "calinski_harabasz", "map_at_r", "nearest_centroid_accuracy"):
        assert report.geometry[key] == pytest.approx(direct[key], rel=1e-6, abs=1e-9), key


def test_leave_one_out_geometry_equals_diagnose():
    X, y = gaussian_classes(250, 6, 5, separation=1.0, seed=13)
    report = dual_probe(X, y, loo=True, k=(1, 10, 30))
    direct = probekit.diagnose(X, y).values
    assert report.geometry["protocol"]["graph"] == "leave-one-out over the rows"
    for key, value in direct.items():
        assert report.geometry[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_geometry_can_be_turned_off_and_shows_in_markdown(blobs):
    X, y = blobs
    assert "geometry" not in dual_probe(X, y, geometry=False).to_dict()
    text = dual_probe(X, y, extra=("isoscore",)).to_markdown()
    assert "| alignment ↓ |" in text and "isoscore ↑" in text


def test_hubness_uses_a_leave_one_out_graph_in_split_modes():
    X, y = gaussian_classes(600, 3, 3, separation=0.5, seed=14)
    report = dual_probe(X, y, metric="euclidean", k=(1, 10))
    train, _ = stratified_holdout(y, test_size=0.2, seed=0)
    direct = probekit.diagnose(X[train], y[train], metric="euclidean").values
    assert report.geometry["protocol"]["hubness_graph"] == "leave-one-out over 480 sampled rows"
    for key in ("hubness_skewness", "robin_hood", "antihub_rate"):
        assert report.geometry[key] == pytest.approx(direct[key], abs=1e-12), key


def test_loo_nearest_centroid_agreement_uses_training_means_only():
    X, y = gaussian_classes(200, 6, 4, separation=0.6, seed=15)
    report = dual_probe(X, y, loo=True, k=(1, 5))
    train, test = stratified_holdout(y, test_size=0.2, seed=0)
    means = np.array([X[train][y[train] == c].mean(axis=0) for c in range(4)])
    nearest = ((X[test][:, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1)
    linear = linear_probe(X[train], y[train], X[test], y[test])
    expected = np.mean(nearest == linear.classes[linear.predictions.predictions])
    assert report.geometry["ncc_linear_agreement"] == pytest.approx(expected)
