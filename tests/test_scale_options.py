"""The scale options of dual_probe and probekit evaluate: the linear backend and the memory
budget reach the probes and the report says what ran."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import gaussian_classes, torch_available
from probekit import dual_probe
from probekit.cli import cli
from probekit.errors import InputError


def test_the_report_names_the_linear_backend_and_the_budget():
    X, y = gaussian_classes(400, 8, 4, seed=1)
    report = dual_probe(X, y, linear_backend="numpy", memory_budget=0, geometry=False,
                        n_bootstrap=10)
    assert report.protocol["backend"]["linear"] == "numpy"
    assert report.protocol["memory_budget"] == 0
    assert report.linear["backend"] == {"name": "numpy", "device": "cpu", "rows": "stream"}
    copied = dual_probe(X, y, linear_backend="numpy", geometry=False, n_bootstrap=10)
    assert copied.linear["backend"]["rows"] == "copy"
    # streamed and copied rows give the same bits
    assert copied.linear["accuracy"] == report.linear["accuracy"]
    assert copied.linear["val_loss"] == report.linear["val_loss"]


@pytest.mark.skipif(not torch_available(), reason="needs torch")
def test_the_torch_linear_backend_runs_from_dual_probe():
    X, y = gaussian_classes(400, 8, 4, seed=1)
    numpy_run = dual_probe(X, y, linear_backend="numpy", geometry=False, n_bootstrap=10)
    torch_run = dual_probe(X, y, linear_backend="torch", geometry=False, n_bootstrap=10)
    assert torch_run.protocol["backend"]["linear"] == "torch"
    assert torch_run.linear["C"] == numpy_run.linear["C"]
    assert abs(torch_run.linear["accuracy"] - numpy_run.linear["accuracy"]) <= 0.001


def test_bad_scale_options_are_refused():
    X, y = gaussian_classes(100, 4, 2, seed=1)
    with pytest.raises(InputError, match="unknown linear backend"):
        dual_probe(X, y, linear_backend="jax")
    with pytest.raises(InputError):
        dual_probe(X, y, memory_budget=-1)


@pytest.mark.parametrize("text, expected", [("1G", 2**30), ("1.5GiB", 3 * 2**29),
                                            ("800M", 800 * 2**20), ("2", 2 * 2**30),
                                            ("0", 0), ("64kb", 64 * 2**10)])
def test_cli_memory_sizes(tmp_path, text, expected):
    X, y = gaussian_classes(200, 4, 2, seed=1)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    done = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"),
                                    "-q", "--no-geometry", "--bootstrap", "10", "--memory", text,
                                    "--linear-backend", "numpy", "--out",
                                    str(tmp_path / "r.json")])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "r.json").read_text())["protocol"]["memory_budget"] == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "inf", "1Q"])
def test_cli_refuses_a_memory_size_it_cannot_read(tmp_path, text):
    X, y = gaussian_classes(200, 4, 2, seed=1)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    done = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"),
                                    "--memory", text])
    assert done.exit_code == 2
    assert "--memory" in done.output and "Traceback" not in done.output


def _without_budget(report) -> dict:
    data = report.to_dict()
    data.pop("timings")
    data["protocol"].pop("memory_budget")
    data["linear"].pop("backend", None)
    for fold in data["linear"].get("folds", []):
        fold.pop("backend", None)
    return data


@pytest.mark.parametrize("options", [{}, {"loo": True}, {"folds": 3},
                                     {"search": "ivf"}, {"metric": "euclidean"}])
def test_a_zero_memory_budget_changes_no_number(options):
    """With no room for copies, the kNN search reads its rows prepared block by block from
    X and the linear probe streams its standardised rows: the report is the same, bit for
    bit, but for the budget and the linear probe's placement."""
    X, y = gaussian_classes(600, 8, 4, separation=1.0, seed=2)
    held = dual_probe(X, y, n_bootstrap=20, linear_backend="numpy", **options)
    streamed = dual_probe(X, y, n_bootstrap=20, linear_backend="numpy", memory_budget=0,
                          **options)
    assert json.dumps(_without_budget(streamed)) == json.dumps(_without_budget(held))


def test_a_zero_memory_budget_changes_no_tag_number():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    Y = (X[:, :4] + 0.5 * rng.normal(size=(500, 4)) > 0.5).astype(np.int8)
    held = dual_probe(X, Y, n_bootstrap=20, linear_backend="numpy")
    streamed = dual_probe(X, Y, n_bootstrap=20, linear_backend="numpy", memory_budget=0)
    assert json.dumps(_without_budget(streamed)) == json.dumps(_without_budget(held))


def test_prepared_rows_read_as_the_copy_holds_them():
    from probekit.neighbours import PreparedRows, prepare_vectors

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6)) * np.exp(rng.normal(size=(50, 1)) * 20)  # wild norms
    rows = np.array([4, 9, 11, 30, 31, 47])
    for metric in ("cosine", "euclidean", "ip"):
        lazy, copy = PreparedRows(X, rows, metric=metric), prepare_vectors(X, rows,
                                                                           metric=metric)
        assert lazy.shape == copy.shape and lazy.dtype == copy.dtype
        assert np.array_equal(lazy[1:4], copy[1:4])
        assert np.array_equal(lazy[np.array([5, 0])], copy[np.array([5, 0])])
        assert np.array_equal(lazy.take(np.array([2, 3]))[0:2], copy[2:4])
    X[9] = 0
    with pytest.raises(InputError, match="all zeros"):
        PreparedRows(X, rows, metric="cosine")
