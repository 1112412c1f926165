"""Regression tests for what a hostile-input campaign found: silently wrong numbers, inputs
destroyed by outputs, and tracebacks instead of one line."""

import json

import numpy as np
import pytest

from conftest import gaussian_classes
from probekit import InputError, diagnose, dual_probe

FAST = {"k": (1, 5, 10), "C": (0.1, 10.0), "n_bootstrap": 50}


def same_numbers(a, b) -> None:
    """Two reports agree on every probe score exactly and on every geometry value to 1e-9
    (the spectrum comes from LAPACK, which rescales matrices by factors of its own)."""
    first, second = a.to_dict(), b.to_dict()
    geometry = [data.pop("geometry") for data in (first, second)]
    for data in (first, second):
        data.pop("timings")
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert geometry[0].keys() == geometry[1].keys()
    for key, value in geometry[0].items():
        if isinstance(value, float):
            assert geometry[1][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


# ------------------------------------------------------------------ float32 overflow


@pytest.mark.parametrize("scale", [1e39, 1e-39, 1e100, 1e-100])
def test_cosine_numbers_do_not_depend_on_the_scale_of_the_rows(scale):
    """Rows are normalised in float64 (each first divided by its largest value), so magnitudes
    beyond float32's range give the same report as the same data at scale 1 (float32 held
    inf or 0 for them before, and the kNN probe read chance)."""
    X, y = gaussian_classes(200, 8, 4, separation=1.5, seed=3, dtype=np.float64)
    powers = 2.0 ** np.round(np.log2(scale))  # an exact power of two: X * powers is exact
    same_numbers(dual_probe(X, y, **FAST), dual_probe(X * powers, y, **FAST))


def test_data_too_small_to_square_is_refused():
    X, y = gaussian_classes(60, 4, 2, seed=3, dtype=np.float64)
    with pytest.raises(InputError, match="the largest value is .*e-20.; values below 1e-150"):
        dual_probe(X * 1e-200, y, **FAST)


def test_float32_extremes_work_under_cosine():
    X, y = gaussian_classes(120, 6, 3, separation=2.0, seed=4)
    X = X.astype(np.float32)
    huge = (X / np.abs(X).max() * np.float32(3e38)).astype(np.float32)
    report = dual_probe(huge, y, **FAST)
    assert report.knn["weighted"]["5"]["accuracy"] > 0.5 and np.isfinite(report.geometry["nc1"])


@pytest.mark.parametrize("metric", ["euclidean", "ip"])
@pytest.mark.parametrize("values", ["huge64", "huge32", "uint64", "tiny"])
def test_values_outside_float32_are_refused_under_euclidean_and_ip(metric, values):
    X, y = gaussian_classes(60, 4, 2, separation=2.0, seed=5)
    if values == "huge64":
        X = X.astype(np.float64) * 1e39
    elif values == "huge32":
        X = (X / np.abs(X).max() * 3e38).astype(np.float32)
    elif values == "uint64":
        X = (np.abs(X.astype(np.float64)) * 2.0**60).astype(np.uint64)
    else:
        X = X * 1e-20
    message = "too small" if values == "tiny" else "too large"
    with pytest.raises(InputError, match=f"{message} for the float32 search under metric "
                                         f"'{metric}'"):
        dual_probe(X, y, metric=metric, **FAST)
    with pytest.raises(InputError, match=message):
        diagnose(X, y, metric=metric)


def test_overflowing_euclidean_rows_are_counted():
    X, y = gaussian_classes(60, 4, 2, separation=2.0, seed=5)
    X[[3, 7, 9]] *= 1e30
    with pytest.raises(InputError, match="3 of 60 rows hold values above"):
        dual_probe(X, y, metric="euclidean", **FAST)


# ------------------------------------------------------------------ labels kept as written


def test_text_labels_keep_quotes_and_refuse_control_characters(tmp_path):
    from probekit.data import load_labels

    path = tmp_path / "y.txt"
    path.write_text('"a"\na\nb\n')
    assert load_labels(path).tolist() == ['"a"', "a", "b"]  # three classes, quotes kept
    for text in ("a\x1fz\nb\n", "a\x00\nb\n", "a\nb\x07\n"):
        path.write_bytes(text.encode())
        with pytest.raises(InputError, match="control characters"):
            load_labels(path)
    path.write_text("a\n\nb\n")
    with pytest.raises(InputError, match="1 labels are missing \\(empty lines: 2\\)"):
        load_labels(path)
    path.write_bytes(b"a\r\nb\r\n")  # Windows line ends are line ends
    assert load_labels(path).tolist() == ["a", "b"]
    path.write_bytes(b"a\x1cb\nc\n")  # str.splitlines would split at \x1c
    with pytest.raises(InputError, match="control characters"):
        load_labels(path)


def test_object_labels_with_a_trailing_nul_are_refused_not_merged():
    from probekit.validate import check_labels

    with pytest.raises(InputError, match="control characters"):
        check_labels(np.array(["a\x00", "a", "b"], dtype=object))


def test_parquet_labels_of_invalid_bytes_are_one_line(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    from probekit.data import load_labels

    path = tmp_path / "y.parquet"
    pd.DataFrame({"label": [b"\xff\xfe", b"ok"]}).to_parquet(path)
    with pytest.raises(InputError, match="not UTF-8"):
        load_labels(path)


def test_an_empty_tag_separator_is_one_line(tmp_path):
    from probekit.data import load_tags

    path = tmp_path / "y.txt"
    path.write_text("a;b\nb\n")
    with pytest.raises(InputError, match="separator must be a non-empty string"):
        load_tags(path, separator="")


# ------------------------------------------------------------------ .npy / .npz headers


def _npy_bytes(header: dict, data: bytes = b"", version=(1, 0)) -> bytes:
    import io

    from numpy.lib import format as npy_format

    stream = io.BytesIO()
    writer = {(1, 0): npy_format.write_array_header_1_0,
              (2, 0): npy_format.write_array_header_2_0}[version]
    writer(stream, header)  # the magic string, the version and the header
    return stream.getvalue() + data


def _zip_with(path, name: str, payload: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.npy", payload)


@pytest.mark.parametrize(("shape", "match"), [
    ((-5, 8), "claims shape \\(-5, 8\\), which no array has"),
    ((10**12, 8), "truncated or its header is wrong: the header claims shape"),
    ((1,) * 40, "holds a 40-D array"),
    ((2**62, 2**62), "truncated or its header is wrong"),
])
def test_npy_and_npz_headers_are_checked_before_any_data_is_read(tmp_path, shape, match):
    from probekit.data import load_embeddings

    payload = _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": shape},
                         np.zeros(16).tobytes())
    (tmp_path / "x.npy").write_bytes(payload)
    with pytest.raises(InputError, match=match):
        load_embeddings(tmp_path / "x.npy")
    _zip_with(tmp_path / "x.npz", "embeddings", payload)
    with pytest.raises(InputError, match=match):
        load_embeddings(tmp_path / "x.npz")


def test_an_oversized_header_and_a_non_zip_npz_say_what_is_wrong(tmp_path):
    from probekit.data import load_embeddings

    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }"
    header = header + b" " * (20000 - len(header)) + b"\n"
    blob = b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header + bytes(32)
    (tmp_path / "x.npy").write_bytes(blob)
    with pytest.raises(InputError, match="header is larger than the 10000 bytes"):
        load_embeddings(tmp_path / "x.npy")
    (tmp_path / "y.npz").write_text("not a zip at all")
    with pytest.raises(InputError, match="is not an .npz archive \\(not a zip file\\)"):
        load_embeddings(tmp_path / "y.npz")


# ------------------------------------------------------------------ saved reports


@pytest.fixture(scope="module")
def two_reports():
    X, y = gaussian_classes(150, 6, 3, separation=1.5, seed=6)
    a = dual_probe(X, y, save_predictions=True, **FAST)
    b = dual_probe(X * np.float32(-1.0) + 0.5, y, save_predictions=True, **FAST)
    return a, b


def test_a_sidecar_of_another_run_is_refused(tmp_path, two_reports):
    from probekit import Report

    a, b = two_reports
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    (tmp_path / "a.npz").write_bytes((tmp_path / "b.npz").read_bytes())
    with pytest.raises(InputError, match="a.npz does not belong to a.json"):
        Report.load(tmp_path / "a.json")


def test_a_write_killed_between_sidecar_and_json_leaves_no_loadable_mix(tmp_path, monkeypatch,
                                                                         two_reports):
    from probekit import Report, report

    a, b = two_reports
    a.save(tmp_path / "r.json")
    original, calls = report.write_atomically, []

    def dies_on_the_json(path, content):
        calls.append(path)
        if str(path).endswith(".json"):
            raise KeyboardInterrupt  # the process dies between the two renames
        return original(path, content)

    monkeypatch.setattr(report, "write_atomically", dies_on_the_json)
    with pytest.raises(KeyboardInterrupt):
        b.save(tmp_path / "r.json")
    monkeypatch.undo()
    assert [p.suffix for p in calls] == [".npz", ".json"]  # the sidecar is written first
    with pytest.raises(InputError, match="r.npz does not belong to r.json"):
        Report.load(tmp_path / "r.json")  # old JSON, new sidecar: refused, never paired
    b.save(tmp_path / "r.json")
    assert Report.load(tmp_path / "r.json").to_dict() == b.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.npz"]


def _mangled(report, path, change):
    data = json.loads(report.to_json())
    change(data)
    path.write_text(json.dumps(data))
    return path


MANGLES = {
    "null knn": lambda d: d.update(knn=None),
    "list input": lambda d: d.update(input=[1, 2]),
    "NaN accuracy": lambda d: d["linear"].update(accuracy=float("nan")),
    "string accuracy": lambda d: d["knn"]["weighted"]["5"].update(accuracy="high"),
    "one-element ci": lambda d: d["linear"].update(ci95=[0.5]),
    "missing classes": lambda d: d["input"].pop("classes"),
    "counts of another length": lambda d: d["input"]["train_class_counts"].append(3),
    "best k not in the table": lambda d: d["knn"]["best"].update(k=77),
    "unknown split": lambda d: d["protocol"].update(split="magic"),
    "geometry string": lambda d: d["geometry"].update(nc1="low"),
    "not an object": lambda d: d.clear() or d.update(x=1),
}


@pytest.mark.parametrize("mangle", sorted(MANGLES))
def test_malformed_reports_are_one_line_in_compare_and_plot(tmp_path, mangle, two_reports):
    from click.testing import CliRunner

    from probekit.cli import cli

    a, b = two_reports
    b.save(tmp_path / "b.json")
    bad = _mangled(a, tmp_path / "a.json", MANGLES[mangle])
    for arguments in (["compare", str(bad), str(tmp_path / "b.json")],
                      ["plot", str(bad), "--out", str(tmp_path / "figs")]):
        result = CliRunner().invoke(cli, arguments)
        assert result.exit_code == 2, (arguments, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1
        assert "not a probekit report" in result.output


@pytest.mark.parametrize("key", ["confusion_linear", "projection_codes", "correct_knn"])
def test_a_malformed_sidecar_is_one_line(tmp_path, key):
    from probekit import Report

    X, y = gaussian_classes(90, 4, 3, seed=7)
    report = dual_probe(X, y, save_predictions=True, projection=True, **FAST)
    arrays = dict(report.arrays)
    arrays[key] = {"confusion_linear": np.array([[0, 0, 5], [1, 9, 2]]),  # class 9 of 3
                   "projection_codes": arrays["projection_codes"] + 10,
                   "correct_knn": arrays["correct_knn"][:, :2]}[key]
    import dataclasses

    dataclasses.replace(report, arrays=arrays).save(tmp_path / "r.json")
    with pytest.raises(InputError, match=f"not the figure data of a probekit report: {key}"):
        Report.load(tmp_path / "r.json")


# ------------------------------------------------------------------ outputs never clobber inputs


@pytest.fixture
def inputs(tmp_path):
    X, y = gaussian_classes(60, 4, 2, separation=2.0, seed=8)
    np.save(tmp_path / "X.npy", X)
    np.savez(tmp_path / "E.npz", embeddings=X)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "y.txt").write_text("\n".join(map(str, y)) + "\n")
    return tmp_path


def _run(arguments, cwd):
    import os

    from click.testing import CliRunner

    from probekit.cli import cli

    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, arguments)
    finally:
        os.chdir(previous)


CLASHES = {
    "--out over the embeddings": ["evaluate", "X.npy", "y.npy", "--out", "X.npy"],
    "--out over the labels": ["evaluate", "X.npy", "y.txt", "--out", "y.txt"],
    "the sidecar over an .npz input": ["evaluate", "E.npz", "y.npy", "--out", "E.json"],
    "--html over the embeddings": ["evaluate", "X.npy", "y.npy", "--html", "X.npy"],
    "--out and --html together": ["evaluate", "X.npy", "y.npy", "--out", "r.json", "--html",
                                  "r.json"],
    "a figure over an input": ["evaluate", "X.npy", "y.npy", "--plots", ".", "--plot-format",
                               "png"],
    "diagnose --out over the embeddings": ["diagnose", "X.npy", "y.npy", "--out", "X.npy"],
    "through a path with ..": ["evaluate", "X.npy", "y.npy", "--out", "sub/../X.npy"],
}


@pytest.mark.parametrize("case", sorted(CLASHES))
def test_an_output_that_is_an_input_or_another_output_is_refused(inputs, case):
    arguments = CLASHES[case]
    if case == "a figure over an input":
        np.save(inputs / "knn_curve.png", np.zeros(3))  # an input that a figure would replace
        arguments = ["evaluate", "knn_curve.png", "y.npy", "--plots", "."]
    before = {path.name: path.read_bytes() for path in inputs.iterdir() if path.is_file()}
    result = _run(arguments, inputs)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    after = {path.name: path.read_bytes() for path in inputs.iterdir() if path.is_file()}
    assert after == before  # nothing written, nothing replaced


def test_report_commands_refuse_to_write_over_their_reports(inputs):
    result = _run(["evaluate", "X.npy", "y.npy", "--out", "rA.json", "-q"], inputs)
    assert result.exit_code == 0, result.output
    saved = (inputs / "rA.json").read_bytes()
    for arguments in (["compare", "rA.json", "rA.json", "--out", "rA.json"],
                      ["plot", "rA.json", "--out", "figs", "--html", "rA.json"],
                      ["plot", "rA.json", "--out", "figs", "--html", "rA.npz"]):
        result = _run(arguments, inputs)
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert (inputs / "rA.json").read_bytes() == saved
    assert _run(["plot", "rA.json", "--out", "figs"], inputs).exit_code == 0


def test_a_link_to_an_input_is_the_input(inputs):
    (inputs / "link.json").symlink_to(inputs / "X.npy")
    result = _run(["evaluate", "X.npy", "y.npy", "--out", "link.json"], inputs)
    assert result.exit_code == 2 and "is an input of this run" in result.output


def test_tune_refuses_two_inputs_of_one_name(inputs):
    pytest.importorskip("torch")
    (inputs / "a").mkdir()
    (inputs / "b").mkdir()
    np.save(inputs / "a" / "X.npy", np.load(inputs / "X.npy"))
    np.save(inputs / "b" / "X.npy", np.load(inputs / "X.npy")[:5])
    result = _run(["tune", "a/X.npy", "y.npy", "--apply", "b/X.npy", "--out", "t"], inputs)
    assert result.exit_code == 2 and "share the name X" in result.output
    assert not (inputs / "t").exists()


def test_files_with_glob_characters_in_their_names_are_files(inputs):
    import shutil

    shutil.copy(inputs / "X.npy", inputs / "[weird].npy")
    shutil.copy(inputs / "X.npy", inputs / "run?.npy")
    for name in ("[weird].npy", "run?.npy"):
        result = _run(["evaluate", name, "y.npy", "--no-geometry", "-q"], inputs)
        assert result.exit_code == 0, result.output
        assert "layer-wise" not in result.output and "| linear |" in result.output


# ------------------------------------------------------------------ many classes


def test_geometry_of_5000_classes_stays_within_memory_linear_in_classes(tmp_path):
    """Speaker-identification data have thousands of classes: the pair terms (CDNV, Davies-
    Bouldin, NC2) stream over blocks of class pairs instead of a C x C x D array (12.8 GB here)
    or even a C x C one (200 MB of float64 here)."""
    import subprocess
    import sys

    script = tmp_path / "many.py"
    script.write_text(
        "import resource, numpy as np, probekit\n"
        "rng = np.random.default_rng(0)\n"
        "y = np.repeat(np.arange(5000), 2)\n"
        "X = (rng.normal(size=(5000, 64)) * 3)[y] + rng.normal(size=(10000, 64))\n"
        "X = X.astype(np.float32)\n"
        "probekit.diagnose(X[:50], y[:50] % 5)  # imports and first calls\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "g = probekit.diagnose(X, y, sample_size=2000)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert np.isfinite([g['cdnv'], g['davies_bouldin'], g['etf_error'], g['nc1']]).all()\n"
        "print((after - before) / 1024)\n")
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr
    growth_mb = float(completed.stdout.split()[-1])
    assert growth_mb < 150, f"peak memory grew by {growth_mb:.0f} MB"


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_identical_rows_give_figures_html_and_an_honest_reading(tmp_path, metric):
    np.save(tmp_path / "X.npy", np.ones((40, 5)))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    result = _run(["evaluate", "X.npy", "y.npy", "--metric", metric, "--plots", "figs",
                   "--html", "r.html", "--out", "r.json", "-q"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "neither probe is clearly above chance" in result.output
    assert (tmp_path / "r.html").stat().st_size > 0
    figures = {path.stem for path in (tmp_path / "figs").iterdir()}
    assert "spectrum" not in figures and {"knn_curve", "confusion"} <= figures


# ------------------------------------------------------------------ kill -9 at any moment


def _intact(folder) -> list[str]:
    """What is wrong with the outputs in ``folder`` (each may be absent, never half-written)."""
    from probekit import Report

    problems = []
    for png in (folder / "figs").glob("*.png") if (folder / "figs").exists() else []:
        data = png.read_bytes()
        if not (data.startswith(b"\x89PNG") and data.rstrip().endswith(b"IEND\xaeB`\x82")):
            problems.append(f"{png.name} is not a whole PNG")
    page = folder / "r.html"
    if page.exists() and not page.read_text().rstrip().endswith("</html>"):
        problems.append("r.html is cut off")
    if (folder / "r.json").exists():
        try:
            Report.load(folder / "r.json")
        except InputError as error:  # a mismatched pair is refused, which is fine
            if "does not belong" not in str(error):
                problems.append(f"r.json: {error}")
    return problems


@pytest.mark.slow
def test_kill_minus_nine_at_any_moment_leaves_every_output_whole(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    X, y = gaussian_classes(600, 16, 6, separation=1.0, seed=9)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    command = [sys.executable, "-m", "probekit", "evaluate", "X.npy", "y.npy", "--plots",
               "figs", "--html", "r.html", "--out", "r.json", "-q"]
    started = time.perf_counter()
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    duration = time.perf_counter() - started
    for fraction in (0.15, 0.35, 0.55, 0.7, 0.8, 0.9, 0.95):
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(fraction * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _intact(tmp_path) == [], f"killed at {fraction:.0%} of the run"
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    assert _intact(tmp_path) == []
    from probekit import Report

    Report.load(tmp_path / "r.json")  # the last complete run is a consistent pair
    leftovers = [path.name for path in tmp_path.rglob(".*.tmp")]
    assert leftovers == []  # killed writers' temporary files were cleaned up by the next run


def test_row_counts_are_compared_from_headers_before_a_large_member_is_read(tmp_path,
                                                                           monkeypatch):
    from probekit import data

    np.savez_compressed(tmp_path / "E.npz", embeddings=np.zeros((200_000, 64), np.float32))
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    reads = []
    original = data._read_member

    def recording(archive, path, name, *, header_only=False):
        reads.append(header_only)
        return original(archive, path, name, header_only=header_only)

    monkeypatch.setattr(data, "_read_member", recording)
    result = _run(["evaluate", "E.npz", "y.npy"], tmp_path)
    assert result.exit_code == 2
    assert "embeddings have 200000 rows but y.npy holds 10 labels" in result.output
    assert reads and all(reads)  # headers only: the 51 MB member was never decompressed
