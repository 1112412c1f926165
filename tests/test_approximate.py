"""Approximate neighbour search: what it returns, what it reports it cost, and that the cost is
measured (recall and accuracy against exact search), never assumed."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import gaussian_classes
from probekit import diagnose, dual_probe, neighbours
from probekit.cli import cli
from probekit.errors import InputError
from probekit.neighbours import SearchMethod, prepare_vectors, recall_at_k, sample_queries, search
from probekit.probes.knn import knn_probe

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def unit_data(n=3000, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return prepare_vectors(rng.normal(size=(n, dim)), metric="cosine")


def test_recall_at_k_on_a_hand_computed_case():
    approximate = np.array([[1, 2, 3], [4, 5, 6]])
    exact = np.array([[1, 2, 9], [6, 5, 4]])
    assert recall_at_k(approximate, exact, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert recall_at_k(approximate, exact, 1) == pytest.approx(0.5)  # 1 == 1, 4 != 6
    assert recall_at_k(approximate, exact, 2) == pytest.approx((1 + 0.5) / 2)  # {4,5} ∩ {6,5}
    with pytest.raises(InputError):
        recall_at_k(approximate[:, :2], exact, 3)


def test_sample_queries_is_seeded_sorted_and_bounded():
    assert np.array_equal(sample_queries(50), np.arange(50))
    first, again = sample_queries(10_000, seed=3), sample_queries(10_000, seed=3)
    assert np.array_equal(first, again) and len(first) == neighbours.RECALL_QUERIES
    assert np.all(np.diff(first) > 0)
    assert not np.array_equal(first, sample_queries(10_000, seed=4))


def test_ivf_scanning_every_list_finds_the_exact_neighbours():
    """With nprobe = nlist the inverted file is an exhaustive search of the same centred rows:
    the same neighbours in the same order. Similarities agree to float32 rounding of the
    squared distances: the flat search forms ||q||² + ||x||² - 2 q·x, the lists (q - x)²,
    each within about D·eps of |q - x|² <= 4 (centred unit rows), halved into a cosine."""
    vectors = unit_data()
    queries, database = vectors[:500], vectors[500:]
    exact = search(queries, database, 20)
    full = search(queries, database, 20, method=SearchMethod("ivf", nlist=40, nprobe=40))
    assert full.method == {"name": "ivf", "nlist": 40, "nprobe": 40, "train_rows": 2500,
                           "seed": 0}
    assert np.array_equal(full.indices, exact.indices)
    bound = 4 * 16 * FLOAT32_EPS * 4
    assert np.abs(full.similarities - exact.similarities).max() <= bound


def test_hnsw_with_a_deep_search_finds_the_exact_neighbours():
    vectors = unit_data(2000)
    exact = search(vectors[:200], vectors, 10)
    deep = search(vectors[:200], vectors, 10, method=SearchMethod("hnsw", ef_search=1000))
    assert deep.method["ef_search"] == 1000
    assert recall_at_k(deep.indices, exact.indices, 10) >= 0.99


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_search_is_deterministic_and_sorted(method):
    vectors = unit_data()
    first = search(vectors[:300], vectors[300:], 15, method=method)
    second = search(vectors[:300], vectors[300:], 15, method=method)
    assert np.array_equal(first.indices, second.indices)
    assert np.array_equal(first.similarities, second.similarities)
    assert np.all(np.diff(first.similarities, axis=1) <= 0)
    assert first.backend == "faiss-cpu"


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_ivf_scan_in_groups_of_lists_finds_what_one_group_finds(monkeypatch, metric):
    """The IVF scan holds a group of lists at a time (bounded memory): groups of about 40 rows
    (a list or two, some lists alone and larger) give the same lists as one group of all."""
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(3000, 16)).astype(np.float32)
    method = SearchMethod("ivf", nlist=40, nprobe=6)
    whole = search(rows[:300], rows[300:], 15, metric=metric, method=method)
    monkeypatch.setattr(neighbours, "LIST_GROUP_ELEMENTS", 16 * 40)
    bounds = np.array([0, 10, 30, 35, 160, 170, 180])  # lists of 10, 20, 5, 125, 10, 10 rows
    assert neighbours._list_groups(bounds, 16) == [range(0, 3), range(3, 4), range(4, 6)]
    grouped = search(rows[:300], rows[300:], 15, metric=metric, method=method)
    assert np.array_equal(grouped.indices, whole.indices)
    assert np.array_equal(grouped.similarities, whole.similarities)


def test_queries_whose_probed_lists_hold_too_few_rows_are_completed_exactly():
    """500 rows in 12 lists (~42 rows each) and 1 list probed cannot give 100 neighbours: those
    queries are searched exactly instead of returning faiss's -1 placeholders."""
    vectors = unit_data(600)
    queries, database = vectors[:100], vectors[100:]
    found = search(queries, database, 100, method=SearchMethod("ivf", nlist=12, nprobe=1))
    exact = search(queries, database, 100)
    assert (found.indices >= 0).all()
    assert np.array_equal(found.indices, exact.indices)


def test_leave_one_out_never_returns_the_query_itself():
    vectors = unit_data(2000)
    for method in ("ivf", "hnsw"):
        found = search(vectors, vectors, 10, exclude_self=True, method=method)
        assert not (found.indices == np.arange(2000)[:, None]).any()
    rows = np.array([3, 50, 700])
    sampled = search(vectors[rows], vectors, 10, self_indices=rows)
    whole = search(vectors, vectors, 10, exclude_self=True)
    assert np.array_equal(sampled.indices, whole.indices[rows])


def test_bad_search_methods_are_refused_with_one_line():
    with pytest.raises(InputError, match="unknown search method"):
        neighbours.search_method("annoy")
    with pytest.raises(InputError, match="nprobe must be a positive integer"):
        SearchMethod("ivf", nprobe=0).check()
    with pytest.raises(InputError, match="train_per_list must be at least 39"):
        SearchMethod("ivf", train_per_list=10).check()
    with pytest.raises(InputError, match="search method"):
        dual_probe(*gaussian_classes(), search=3)


def test_a_k_beyond_faiss_gpu_limit_runs_on_another_backend(monkeypatch):
    """faiss-gpu's flat search takes k <= 2048: search() itself moves a deeper search (a
    leave-one-out k of 2048 asks for 2049) to torch on CUDA or to faiss-cpu."""
    monkeypatch.setattr(neighbours, "resolve_backend", lambda backend="auto": "faiss-gpu")
    monkeypatch.setattr(neighbours, "cuda_available", lambda: False)
    vectors = unit_data(2100, dim=8)
    found = search(vectors, vectors, 2048, exclude_self=True)
    assert found.backend == "faiss-cpu" and found.indices.shape == (2100, 2048)


def test_dual_probe_reports_the_measured_cost_of_an_approximate_search():
    """The recall and the sample accuracies in the report are recomputed here from an
    independent exact search of the same sampled test rows."""
    X, y = gaussian_classes(4000, 16, 8, separation=1.0, seed=2)
    method = SearchMethod("ivf", nlist=60, nprobe=3)
    approximate = dual_probe(X, y, search=method, geometry=False, n_bootstrap=20)
    exact = dual_probe(X, y, geometry=False, n_bootstrap=20, save_predictions=True)
    check = approximate.knn["approximation"]
    assert check["method"] == approximate.protocol["search"]
    assert exact.protocol["search"] == {"name": "exact"} and "approximation" not in exact.knn
    assert check["n_queries"] == 800  # all 800 test rows: fewer than 1000
    assert set(check["recall"]) == {"1", "2", "5", "10", "20", "50", "100"}
    assert 0.3 < check["recall"]["20"] < 1.0  # 3 of 60 lists: clearly approximate here

    from probekit.labels import encode_labels
    from probekit.splits import stratified_holdout

    codes = encode_labels(y).train
    train, test = stratified_holdout(codes, test_size=0.2, seed=0)
    vectors = prepare_vectors(X, metric="cosine")
    truth = search(vectors[test], vectors[train], 100)
    again = search(vectors[test], vectors[train], 100, method=method)
    assert check["recall"]["20"] == pytest.approx(recall_at_k(again.indices, truth.indices, 20))
    # the exact sample accuracy is the exact run's own weighted k=20 accuracy (every test row)
    assert check["accuracy"]["exact"] == pytest.approx(exact.knn["weighted"]["20"]["accuracy"])
    assert check["accuracy"]["approximate"] == pytest.approx(
        approximate.knn["weighted"]["20"]["accuracy"])
    moved = check["largest_difference"]
    difference = (approximate.knn[moved["vote"]][str(moved["k"])]["accuracy"]
                  - exact.knn[moved["vote"]][str(moved["k"])]["accuracy"])
    assert moved["difference"] == pytest.approx(difference)
    for vote in ("majority", "weighted"):
        for k in approximate.knn[vote]:
            assert abs(approximate.knn[vote][k]["accuracy"] - exact.knn[vote][k]["accuracy"]) \
                <= abs(moved["difference"]) + 1e-12
    text = approximate.to_markdown()
    assert "Approximate search (IVF, 60 lists, 3 probed per query): recall@20" in text


def test_a_sample_of_1000_queries_checks_a_larger_test_set(tmp_path):
    X, y = gaussian_classes(6000, 8, 4, separation=1.0, seed=5)
    report = dual_probe(X, y, search="ivf", geometry=False, n_bootstrap=10, seed=7)
    check = report.knn["approximation"]
    assert check["n_queries"] == 1000 and check["seed"] == 7
    path = tmp_path / "r.json"
    report.to_json(path)
    assert json.loads(path.read_text())["knn"]["approximation"] == json.loads(json.dumps(check))
    again = dual_probe(X, y, search="ivf", geometry=False, n_bootstrap=10, seed=7)
    assert again.knn["approximation"] == check


def test_knn_probe_and_leave_one_out_measure_the_approximation_too():
    X, y = gaussian_classes(1500, 8, 4, separation=1.0, seed=1)
    result = knn_probe(X, y, loo=True, method="hnsw", k=(1, 10))
    check = result.to_dict()["approximation"]
    assert check["method"]["name"] == "hnsw" and check["n_queries"] == 1000
    assert check["recall"]["10"] > 0.9
    report = dual_probe(X, y, loo=True, search="ivf", n_bootstrap=10)
    assert report.knn["approximation"]["n_queries"] == 1000
    assert report.geometry["protocol"]["graph_search"]["name"] == "ivf"


def test_k_fold_pools_the_checks_of_its_folds():
    X, y = gaussian_classes(1200, 8, 4, separation=1.0, seed=3)
    report = dual_probe(X, y, folds=3, search="ivf", geometry=False, n_bootstrap=10)
    assert report.knn["approximation"]["n_queries"] == 1200  # 400 test rows per fold


def test_the_geometry_says_its_graph_is_approximate_and_what_it_missed():
    X, y = gaussian_classes(3000, 16, 6, separation=1.0, seed=4)
    report = dual_probe(X, y, search=SearchMethod("ivf", nlist=50, nprobe=2), n_bootstrap=10)
    protocol = report.geometry["protocol"]
    assert protocol["graph_search"] == report.protocol["search"]
    assert protocol["graph_recall"]["10"] == report.knn["approximation"]["recall"]["10"]
    assert any("approximate search (ivf; recall@2" in note
               for note in report.geometry["warnings"])
    exact = dual_probe(X, y, n_bootstrap=10)
    assert exact.geometry["protocol"]["graph_search"] == {"name": "exact"}
    assert "graph_recall" not in exact.geometry["protocol"]
    # the sampled keys stay exact: MAP@R does not move with the graph's search
    assert report.geometry["map_at_r"] == exact.geometry["map_at_r"]

    alone = diagnose(X, y, method="ivf")
    assert alone.protocol["graph_search"]["name"] == "ivf"
    assert set(alone.protocol["graph_recall"]) >= {"1", "2", "10"}


def test_tags_report_the_recall_and_the_map_both_ways():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2500, 12)).astype(np.float32)
    Y = (X[:, :5] + 0.5 * rng.normal(size=(2500, 5)) > 0.8).astype(np.int8)
    report = dual_probe(X, Y, search="ivf", n_bootstrap=10, geometry=False)
    check = report.knn["approximation"]
    assert check["n_queries"] == 500 and 0 < check["recall"]["20"] <= 1
    assert set(check["map"]) == {"vote", "k", "exact", "approximate"}
    assert "their mAP (weighted, k=20)" in report.to_markdown()


def test_html_states_the_approximation(tmp_path):
    X, y = gaussian_classes(2000, 8, 4, separation=1.0, seed=6)
    report = dual_probe(X, y, search="ivf", geometry=False, n_bootstrap=10)
    from probekit.render.html import write_html

    path = tmp_path / "r.html"
    write_html(report, path, figures={})
    assert "Approximate search (IVF," in path.read_text()


def test_cli_search_options(tmp_path):
    X, y = gaussian_classes(3000, 8, 4, separation=1.0, seed=8)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    runner = CliRunner()
    base = ["evaluate", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), "-q", "--no-geometry",
            "--bootstrap", "10"]
    done = runner.invoke(cli, base + ["--search", "ivf", "--nlist", "30", "--nprobe", "4",
                                      "--out", str(tmp_path / "r.json")])
    assert done.exit_code == 0, done.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["protocol"]["search"]["nlist"] == 30
    assert saved["protocol"]["search"]["nprobe"] == 4
    assert "Approximate search (IVF, 30 lists, 4 probed per query)" in done.output
    wrong = runner.invoke(cli, base + ["--nprobe", "4"])
    assert wrong.exit_code == 2 and "--nlist and --nprobe are knobs of --search ivf" in \
        wrong.output
    wrong = runner.invoke(cli, base + ["--search", "ivf", "--ef-search", "9"])
    assert wrong.exit_code == 2 and "--ef-search is a knob of --search hnsw" in wrong.output


def test_cli_announces_a_long_exact_search_and_stays_exact(tmp_path, monkeypatch):
    import probekit.cli as cli_module

    X, y = gaussian_classes(400, 8, 4, separation=1.0, seed=8)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    monkeypatch.setattr(cli_module, "EXACT_SEARCH_TIMED_WORK", 0)
    monkeypatch.setattr(neighbours, "exact_search_seconds", lambda *a, **k: 600.0)
    done = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "X.npy"),
                                    str(tmp_path / "y.npy"), "--no-geometry",
                                    "--out", str(tmp_path / "r.json")])
    assert done.exit_code == 0, done.output
    assert ("the exact kNN search (80 queries against 320 rows) will take about 10 min here; "
            "--search ivf") in done.output
    assert json.loads((tmp_path / "r.json").read_text())["protocol"]["search"] == {
        "name": "exact"}


def test_exact_search_time_is_estimated_from_one_small_timed_search():
    seconds = neighbours.exact_search_seconds(10_000, 200_000, 32)
    assert np.isfinite(seconds) and seconds > 0
