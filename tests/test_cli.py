"""Tests of the ``probekit`` command line (probekit.cli)."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from probekit import __version__
from probekit.cli import cli

N_PER_CLASS, DIM, N_CLASSES = 50, 16, 4
NAMES = np.array(["bird", "cat", "dog", "fish"])


def _runner() -> CliRunner:
    """A runner that keeps stderr apart from stdout (click < 8.2 needs mix_stderr=False; the
    argument is gone in click >= 8.2, where stderr is always separate)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def _blobs(seed: int, n_per_class: int = N_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated Gaussian classes (the same centres for every seed)."""
    centers = np.random.default_rng(1234).normal(size=(N_CLASSES, DIM)) * 6.0
    y = np.repeat(np.arange(N_CLASSES), n_per_class)
    X = centers[y] + np.random.default_rng(seed).normal(size=(y.size, DIM))
    return X, y


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    X, y = _blobs(0)
    X_test, y_test = _blobs(1, n_per_class=15)
    paths = {name: tmp_path / f"{name}.npy" for name in ("emb", "labels", "test_emb",
                                                          "test_labels")}
    np.save(paths["emb"], X)
    np.save(paths["labels"], y)
    np.save(paths["test_emb"], X_test)
    np.save(paths["test_labels"], y_test)
    return paths


def _evaluate(*args) -> object:
    result = _runner().invoke(cli, ["evaluate", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def _evaluate_json(out: Path, *args) -> dict:
    _evaluate(*args, "--out", out)
    return json.loads(out.read_text())


def _assert_one_error_line(result, status: int, *fragments: str) -> str:
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------
# successful runs


def test_help_and_version():
    result = _runner().invoke(cli, ["evaluate", "--help"])
    assert result.exit_code == 0
    assert "--test-embeddings" in result.output
    result = _runner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_evaluate_prints_markdown_table(files):
    result = _evaluate(files["emb"], files["labels"])
    out = result.stdout
    assert out.startswith("# probekit dual probe")
    assert "| probe | setting | accuracy |" in out
    assert "| linear |" in out
    assert "| kNN | k=1 majority |" in out and "| kNN | k=5 weighted |" in out
    assert "**Reading:**" in out
    assert "160 train / 40 test samples, 16 dimensions, 4 classes" in out
    assert result.stderr == ""  # no progress when stderr is not a terminal, no --out note


def test_json_report(files, tmp_path):
    out = tmp_path / "report.json"
    result = _evaluate(files["emb"], files["labels"], "--out", out)
    assert "report written to" in result.stderr
    report = json.loads(out.read_text())
    for key in ("probekit_version", "input", "protocol", "knn", "linear", "warnings",
                "timings"):
        assert key in report
    assert report["probekit_version"] == __version__
    assert report["protocol"]["split"] == "holdout"
    assert report["protocol"]["seed"] == 0
    assert report["protocol"]["metric"] == "cosine"
    assert report["input"]["n_samples"] == 200
    assert report["input"]["n_train"] + report["input"]["n_test"] == 200
    assert report["input"]["dim"] == DIM
    assert report["input"]["classes"] == [0, 1, 2, 3]
    assert report["input"]["files"]["embeddings"]["name"] == "emb.npy"
    assert report["warnings"] == []
    assert set(report["timings"]) >= {"knn_s", "linear_s", "total_s"}

    ks = [str(k) for k in report["protocol"]["k"]]
    assert ks[:2] == ["1", "5"]
    for vote in ("majority", "weighted"):
        assert list(report["knn"][vote]) == ks
        for scores in report["knn"][vote].values():
            for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
                assert 0.0 <= scores[metric] <= 1.0
            low, high = scores["ci95"]
            assert 0.0 <= low <= scores["accuracy"] <= high <= 1.0
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert 0.0 <= report["linear"][metric] <= 1.0
    # well-separated classes: both probes get nearly everything right
    assert report["linear"]["accuracy"] >= 0.95
    assert report["knn"]["majority"]["1"]["accuracy"] >= 0.95
    assert report["knn"]["weighted"]["5"]["accuracy"] >= 0.95


def test_given_split(files, tmp_path):
    report = _evaluate_json(tmp_path / "r.json", files["emb"], files["labels"],
                            "--test-embeddings", files["test_emb"],
                            "--test-labels", files["test_labels"])
    assert report["protocol"]["split"] == "given"
    assert report["input"]["n_test"] == 60
    assert report["input"]["n_train"] == 200
    assert report["input"]["test_class_counts"] == [15, 15, 15, 15]
    assert set(report["input"]["files"]) == {"embeddings", "labels", "test_embeddings",
                                             "test_labels"}
    assert report["linear"]["accuracy"] >= 0.95


def test_string_labels_from_txt(files, tmp_path):
    _, y = _blobs(0)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES[y]) + "\n")
    result = _evaluate(files["emb"], labels, "--out", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["input"]["classes"] == ["bird", "cat", "dog", "fish"]
    assert report["input"]["n_classes"] == 4
    assert report["linear"]["accuracy"] >= 0.95
    assert "| linear |" in result.stdout


def test_options_are_honoured(files, tmp_path):
    report = _evaluate_json(tmp_path / "r.json", files["emb"], files["labels"], "--k", "1,3",
                            "--metric", "euclidean", "--folds", "3", "--seed", "1",
                            "--c-grid", "0.1,1,10")
    protocol = report["protocol"]
    assert protocol["k"] == [1, 3]
    assert protocol["metric"] == "euclidean"
    assert protocol["knn_preprocess"] == "none"
    assert protocol["split"] == "kfold"
    assert protocol["folds"] == 3
    assert protocol["seed"] == 1
    assert protocol["bootstrap"]["seed"] == 1
    assert protocol["C_grid"] == [0.1, 1.0, 10.0]
    assert list(report["knn"]["majority"]) == ["1", "3"]
    assert list(report["knn"]["weighted"]) == ["1", "3"]
    assert report["input"]["n_test"] == 200  # every sample is tested once across the folds
    assert "accuracy_std" in report["linear"]


def test_leave_one_out(files, tmp_path):
    out = tmp_path / "r.json"
    result = _evaluate(files["emb"], files["labels"], "--loo", "--k", "1,5", "--out", out)
    report = json.loads(out.read_text())
    assert report["protocol"]["loo"] is True
    assert report["input"]["n_knn_test"] == 200
    assert report["knn"]["majority"]["1"]["accuracy"] >= 0.95
    assert "leave-one-out" in result.stdout


def test_same_seed_same_report(files, tmp_path):
    args = [files["emb"], files["labels"], "--k", "1,5", "--seed", "3"]
    first = _evaluate_json(tmp_path / "a.json", *args)
    second = _evaluate_json(tmp_path / "b.json", *args)
    assert first.pop("timings") is not None and second.pop("timings") is not None
    assert first == second


def test_other_seed_other_split(tmp_path):
    X, y = _blobs(0)
    order = np.random.default_rng(5).permutation(y.size)  # interleave the classes
    np.save(tmp_path / "emb.npy", X[order])
    np.save(tmp_path / "labels.npy", y[order])
    args = [tmp_path / "emb.npy", tmp_path / "labels.npy", "--k", "1"]
    first = _evaluate_json(tmp_path / "a.json", *args, "--seed", "0")
    second = _evaluate_json(tmp_path / "b.json", *args, "--seed", "1")
    assert first["protocol"]["seed"] == 0 and second["protocol"]["seed"] == 1
    # the test labels, in sample order, differ when the holdout picks other samples
    assert first["input"]["test_labels_sha256"] != second["input"]["test_labels_sha256"]


def test_k_larger_than_data_is_dropped_with_warning(files, tmp_path):
    out = tmp_path / "r.json"
    result = _evaluate(files["emb"], files["labels"], "--k", "1,5000", "--out", out)
    report = json.loads(out.read_text())
    assert report["protocol"]["k"] == [1]
    assert list(report["knn"]["majority"]) == ["1"]
    assert any("5000" in warning for warning in report["warnings"])
    assert "Warnings:" in result.stdout


# --------------------------------------------------------------------------------------------
# bad input: exit status 2, one line "error: ..." on stderr, no traceback


def _write_pickle(path: Path) -> None:
    with open(path, "wb") as stream:
        pickle.dump([[1.0, 2.0], [3.0, 4.0]], stream)


def _case_missing_file(tmp_path, files):
    return [tmp_path / "missing.npy", files["labels"]], ["not found", "missing.npy"]


def _case_pickled_npy(tmp_path, files):
    path = tmp_path / "x.npy"
    _write_pickle(path)
    return [path, files["labels"]], ["pickled"]


def _case_object_npy(tmp_path, files):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1.0, "a"]] * 200, dtype=object), allow_pickle=True)
    return [path, files["labels"]], ["pickled"]


def _case_one_dimensional(tmp_path, files):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(200.0))
    return [path, files["labels"]], ["2-D"]


def _case_three_dimensional(tmp_path, files):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((200, 4, 4)))  # read as a stack of 200 layers of 4 rows
    return [path, files["labels"]], ["200 layers", "3-D"]


def _case_nan_rows(tmp_path, files):
    X, _ = _blobs(0)
    X[[3, 50, 51], 2] = np.nan
    path = tmp_path / "x.npy"
    np.save(path, X)
    return [path, files["labels"]], ["3 of 200 rows", "NaN"]


def _case_length_mismatch(tmp_path, files):
    _, y = _blobs(0)
    path = tmp_path / "short.npy"
    np.save(path, y[:-1])
    return [files["emb"], path], ["200", "199"]


def _case_single_class(tmp_path, files):
    path = tmp_path / "one.npy"
    np.save(path, np.full(200, 7))
    return [files["emb"], path], ["single class", "7"]


def _case_singleton_class(tmp_path, files):
    _, y = _blobs(0)
    labels = NAMES[y].astype(object)
    labels[0] = "unicorn"
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(labels) + "\n")
    return [files["emb"], path], ["unicorn", "(1)"]


def _case_dimension_mismatch(tmp_path, files):
    X_test, _ = _blobs(1, n_per_class=15)
    path = tmp_path / "narrow.npy"
    np.save(path, X_test[:, :8])
    return [files["emb"], files["labels"], "--test-embeddings", path,
            "--test-labels", files["test_labels"]], ["16", "8", "dimensions"]


def _case_test_embeddings_alone(tmp_path, files):
    return [files["emb"], files["labels"], "--test-embeddings", files["test_emb"]], [
        "--test-labels"
    ]


def _case_test_labels_alone(tmp_path, files):
    return [files["emb"], files["labels"], "--test-labels", files["test_labels"]], [
        "--test-embeddings"
    ]


def _case_empty_file(tmp_path, files):
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")
    return [path, files["labels"]], ["empty"]


def _case_zero_rows_cosine(tmp_path, files):
    X, _ = _blobs(0)
    X[[0, 100]] = 0.0
    path = tmp_path / "zeros.npy"
    np.save(path, X)
    return [path, files["labels"], "--metric", "cosine"], ["2", "zero", "cosine"]


def _case_too_few_folds(tmp_path, files):
    return [files["emb"], files["labels"], "--folds", "1"], ["--folds"]


def _case_bad_test_size(tmp_path, files):
    return [files["emb"], files["labels"], "--test-size", "1.5"], ["1.5"]


def _case_loo_with_test_set(tmp_path, files):
    return [files["emb"], files["labels"], "--loo", "--test-embeddings", files["test_emb"],
            "--test-labels", files["test_labels"]], ["leave-one-out"]


def _case_all_k_too_large(tmp_path, files):
    return [files["emb"], files["labels"], "--k", "5000"], ["5000"]


BAD_INPUTS = [
    _case_missing_file, _case_pickled_npy, _case_object_npy, _case_one_dimensional,
    _case_three_dimensional, _case_nan_rows, _case_length_mismatch, _case_single_class,
    _case_singleton_class, _case_dimension_mismatch, _case_test_embeddings_alone,
    _case_test_labels_alone, _case_empty_file, _case_zero_rows_cosine, _case_too_few_folds,
    _case_bad_test_size, _case_loo_with_test_set, _case_all_k_too_large,
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.__name__[len("_case_"):])
def test_bad_input_exits_2_with_one_error_line(case, tmp_path, files):
    args, fragments = case(tmp_path, files)
    result = _runner().invoke(cli, ["evaluate", *map(str, args)])
    _assert_one_error_line(result, 2, *fragments)


def test_bad_input_writes_no_report(tmp_path, files):
    out = tmp_path / "r.json"
    args, _ = _case_nan_rows(tmp_path, files)
    result = _runner().invoke(cli, ["evaluate", *map(str, args), "--out", str(out)])
    _assert_one_error_line(result, 2)
    assert not out.exists()


def test_unwritable_out_exits_1_with_one_error_line(tmp_path, files):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    result = _runner().invoke(cli, ["evaluate", str(files["emb"]), str(files["labels"]),
                                    "--k", "1", "--out", str(blocker / "r.json")])
    _assert_one_error_line(result, 1)


# --------------------------------------------------------------------------------------------
# the installed console script, in a real subprocess


def _probekit_command() -> list[str]:
    beside = Path(sys.executable).with_name("probekit")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("probekit")
    if found:
        return [found]
    return [sys.executable, "-m", "probekit.cli"]


def test_console_script_runs(tmp_path):
    X, y = _blobs(0, n_per_class=20)
    np.save(tmp_path / "emb.npy", X)
    (tmp_path / "labels.txt").write_text("\n".join(NAMES[y]) + "\n")
    completed = subprocess.run(
        [*_probekit_command(), "evaluate", "emb.npy", "labels.txt", "--k", "1,5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| linear |" in completed.stdout
    assert "| kNN | k=5 weighted |" in completed.stdout
    assert "**Reading:**" in completed.stdout
    assert "Traceback" not in completed.stderr


def test_console_script_bad_file(tmp_path):
    _write_pickle(tmp_path / "x.npy")
    np.save(tmp_path / "y.npy", np.arange(2))
    completed = subprocess.run(
        [*_probekit_command(), "evaluate", "x.npy", "y.npy"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ") and "pickled" in lines[0]


@pytest.mark.parametrize("option", [
    ["--bootstrap", "0"], ["--seed", "-1"], ["--temperature", "nan"], ["--c-grid", "inf"],
    ["--folds", "0"], ["--max-iter", "0"], ["--val-size", "0"], ["--tol", "0"],
])
def test_out_of_range_options_are_one_line_errors(files, option):
    result = _runner().invoke(cli, ["evaluate", str(files["emb"]), str(files["labels"]),
                                    *option])
    _assert_one_error_line(result, 2)


def test_headerless_csv_labels_get_a_hint(files, tmp_path):
    labels = np.load(files["labels"])
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(map(str, labels)) + "\n")
    result = _runner().invoke(cli, ["evaluate", str(files["emb"]), str(path)])
    _assert_one_error_line(result, 2, "need a header row")


def test_diagnose_command_with_and_without_labels(files, tmp_path):
    out = tmp_path / "geometry.json"
    result = _runner().invoke(cli, ["diagnose", str(files["emb"]), str(files["labels"]),
                                    "--out", str(out), "--extra", "isoscore"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "alignment ↓" in result.output and "isoscore ↑" in result.output
    data = json.loads(out.read_text())
    assert data["protocol"]["n_classes"] == 4 and "silhouette" in data
    free = _runner().invoke(cli, ["diagnose", str(files["emb"])])
    assert free.exit_code == 0 and "uniformity ↓" in free.output
    assert "alignment" not in free.output


def test_diagnose_bad_input_is_one_line(files, tmp_path):
    result = _runner().invoke(cli, ["diagnose", str(files["emb"]), "--extra", "umap"])
    _assert_one_error_line(result, 2, "unknown extra")


# --------------------------------------------------------------------------------------------
# one place turns errors into exit statuses: a bug is one line too


def test_an_unexpected_exception_is_one_internal_error_line(files, monkeypatch):
    import probekit.dual

    def broken(*args, **kwargs):
        raise RuntimeError("the probe\n  fell over")

    monkeypatch.setattr(probekit.dual, "dual_probe", broken)
    monkeypatch.delenv("PROBEKIT_DEBUG", raising=False)
    result = _runner().invoke(cli, ["evaluate", str(files["emb"]), str(files["labels"])])
    line = _assert_one_error_line(result, 1)
    assert line == ("error: internal error: RuntimeError: the probe fell over (a bug: please "
                    "report it; set PROBEKIT_DEBUG=1 for the traceback)")

    monkeypatch.setenv("PROBEKIT_DEBUG", "1")
    result = _runner().invoke(cli, ["evaluate", str(files["emb"]), str(files["labels"])])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "in broken" in result.stderr and "RuntimeError: the probe" in result.stderr
    assert result.stderr.splitlines()[-1] == line


def test_an_error_closes_the_progress_line_first(files, monkeypatch):
    import probekit.cli
    import probekit.dual
    from probekit.errors import InputError

    def failing(*args, progress, **kwargs):
        progress("linear probe", 1, 3)
        raise InputError("no good")

    def on_a_terminal(self, enabled):
        original(self, enabled)
        self.enabled = enabled

    original = probekit.cli._Progress.__init__
    monkeypatch.setattr(probekit.cli._Progress, "__init__", on_a_terminal)
    monkeypatch.setattr(probekit.dual, "dual_probe", failing)
    result = _runner().invoke(cli, ["evaluate", str(files["emb"]), str(files["labels"])])
    assert result.exit_code == 2
    assert result.stderr == "\rlinear probe: 1/3\nerror: no good\n"


REQUIRED = object()  # a required option: no default

SHARED_OPTIONS = {  # command -> shared option -> its default (as the README documents them)
    "evaluate": {"--test-labels": None, "--k": "1,5,10,20,50,100", "--metric": "cosine",
                 "--temperature": 0.07, "--test-size": 0.2, "--seed": 0, "--backend": "auto",
                 "--bootstrap": 1000, "--geometry": True, "--extra": "", "--key": None,
                 "--label-key": None, "--label-column": None, "--out": None,
                 "--plot-format": "png", "--html": None, "--multilabel": False,
                 "--tag-separator": ";", "--quiet": False},
    "diagnose": {"--metric": "cosine", "--seed": 0, "--extra": "", "--backend": "auto",
                 "--key": None, "--label-key": None, "--label-column": None, "--out": None},
    "plot": {"--out": REQUIRED, "--plot-format": "png", "--html": None},
    "compare": {"--test-labels": None, "--k": "1,5,10,20,50,100", "--metric": "cosine",
                "--test-size": 0.2, "--seed": 0, "--bootstrap": 1000, "--geometry": True,
                "--key": None, "--label-key": None, "--label-column": None,
                "--multilabel": False, "--tag-separator": ";", "--out": None,
                "--quiet": False},
    "demo": {"--out": Path("probekit-demo"), "--quiet": False},
    "tune": {"--out": REQUIRED, "--epochs": 30, "--batch-size": 128, "--m": 4, "--lr": 3e-3,
             "--temperature": 0.07, "--seed": 0, "--key": None, "--label-column": None,
             "--quiet": False},
    "finetune": {"--encoder": "ge2e", "--pooling": "mean", "--out": REQUIRED, "--epochs": 10,
                 "--batch-size": 64, "--m": 4, "--lr": 1e-4, "--temperature": 0.07,
                 "--max-seconds": None, "--device": "auto", "--amp": True, "--seed": 0,
                 "--quiet": False},
    "embed": {"--encoder": "ge2e", "--pooling": "mean", "--out": REQUIRED,
              "--max-seconds": None, "--device": "auto", "--amp": True, "--quiet": False},
    "manifest": {"--out": REQUIRED},
}


@pytest.mark.parametrize("command", sorted(SHARED_OPTIONS))
def test_every_command_has_its_shared_options_with_the_documented_defaults(command):
    import click

    chosen = cli.commands[command]
    context = click.Context(chosen)
    options = {param.opts[0]: param for param in chosen.params
               if isinstance(param, click.Option)}
    for flag, default in SHARED_OPTIONS[command].items():
        assert flag in options, (command, flag)
        option = options[flag]
        if default is REQUIRED:
            assert option.required, (command, flag)
        else:
            assert not option.required and option.get_default(context) == default, (
                command, flag, option.get_default(context))
    if "--quiet" in options:
        assert options["--quiet"].opts == ["--quiet", "-q"]
    assert set(cli.commands) == set(SHARED_OPTIONS)
    result = _runner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    for flag in SHARED_OPTIONS[command]:
        assert flag in result.stdout, (command, flag)
