"""The Report: everything one dual-probe run found, as plain data.

A frozen dataclass of JSON-ready dictionaries with views for people (markdown), for programs
(dict / JSON) and for analysis (a pandas frame, one row per metric). The same inputs and seed
give the same report, byte for byte, except ``timings``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probekit.errors import InputError
from probekit.files import write_atomically
from probekit.probes.metrics import SCORE_KEYS
from probekit.probes.tagging import TAG_KEYS


@dataclass(frozen=True)
class Report:
    """Result of :func:`probekit.dual_probe`.

    Attributes
    ----------
    probekit_version : the version that made it.
    input : sizes, classes and class counts, label hash of the test set.
    protocol : the protocol actually used (split, seed, k, metric, grids, backends...).
    knn : ``{"majority": {k: scores}, "weighted": {k: scores}, "best": ..., "backend": ...}``.
    linear : scores plus ``C``, ``C_grid``, ``val_accuracy`` and convergence details.
    linear_vs_knn : the linear probe against the fixed kNN setting (weighted vote, k = 20 or
        the nearest k run) on the same test samples: both scores, their difference
        ``knn − linear`` with its paired bootstrap 95 % CI, and the p-value of a paired test
        (McNemar's exact test; a paired bootstrap for the mAP of tags). The reading uses it.
    geometry : the geometry diagnostics (:meth:`probekit.Geometry.to_dict`), or empty.
    arrays : what the figures need (confusion matrices, spectrum, k-occurrences, similarity
        histograms, the 2-D map); not in the JSON, saved beside it by :meth:`save`.
    warnings : notes about anything that did not go as asked.
    timings : seconds per stage.
    """

    probekit_version: str
    input: dict
    protocol: dict
    knn: dict
    linear: dict
    warnings: tuple[str, ...] = field(default=())
    timings: dict = field(default_factory=dict)
    geometry: dict = field(default_factory=dict)
    linear_vs_knn: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict, repr=False, compare=False)

    # ---------------------------------------------------------------------- conversions

    def to_dict(self) -> dict:
        """A deep copy as plain JSON-ready Python data."""
        return {
            "probekit_version": self.probekit_version,
            "input": copy.deepcopy(self.input),
            "protocol": copy.deepcopy(self.protocol),
            "knn": copy.deepcopy(self.knn),
            "linear": copy.deepcopy(self.linear),
            "linear_vs_knn": copy.deepcopy(self.linear_vs_knn),
            "reading": self.reading(),
            **({"geometry": copy.deepcopy(self.geometry)} if self.geometry else {}),
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        return cls(
            probekit_version=data["probekit_version"], input=data["input"],
            protocol=data["protocol"], knn=data["knn"], linear=data["linear"],
            warnings=tuple(data.get("warnings", ())), timings=data.get("timings", {}),
            geometry=data.get("geometry", {}), linear_vs_knn=data.get("linear_vs_knn", {}),
        )

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int = 2) -> str:
        """The report as JSON; written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        if path is not None:
            write_atomically(path, text)
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Report:
        """A report from its JSON (its structure checked; see :meth:`load` for the sidecar)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise InputError(f"{path.name} is not a probekit report (not JSON: "
                             f"{str(error).splitlines()[0]})") from None
        return cls.from_dict(check_report_data(data, path.name))

    def save(self, path: str | os.PathLike) -> tuple[Path, Path | None]:
        """Write the JSON to ``path`` and the arrays to the sidecar ``path`` with suffix
        ``.npz``, each atomically, the sidecar first. The JSON records the SHA-256 of the
        arrays (``figure_data``), so a JSON and a sidecar of two different runs (a run killed
        between the two renames) never pass :meth:`load` as a pair. Returns both paths (the
        second None without arrays)."""
        path = Path(path)
        if path.suffix.lower() == ".npz":
            raise InputError(f"write the report as .json, not {path.name}: the .npz beside it "
                             "holds the figure data")
        data = self.to_dict()
        sidecar = None
        if self.arrays:
            sidecar = path.with_suffix(".npz")
            write_atomically(sidecar, lambda stream: np.savez_compressed(stream, **self.arrays))
            data["figure_data"] = {"sha256": arrays_digest(self.arrays)}
        write_atomically(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
        return path, sidecar

    @classmethod
    def load(cls, path: str | os.PathLike) -> Report:
        """Read a report written by :meth:`save` with the figure data its JSON names (never
        unpickled; both files' structure checked, and the arrays' SHA-256 matched)."""
        from probekit.data import load_arrays

        path = Path(path)
        if not path.is_file():
            raise InputError(f"report not found: {path}")
        report = cls.from_json(path)
        recorded = json.loads(path.read_text(encoding="utf-8")).get("figure_data")
        if not recorded:
            return report
        if not (isinstance(recorded, dict) and isinstance(recorded.get("sha256"), str)):
            raise InputError(f"{path.name}: its figure_data entry is malformed")
        sidecar = path.with_suffix(".npz")
        if not sidecar.is_file():
            raise InputError(f"{sidecar.name}, the figure data of {path.name}, is missing")
        arrays = load_arrays(sidecar)
        if arrays_digest(arrays) != recorded["sha256"]:
            raise InputError(f"{sidecar.name} does not belong to {path.name} (its arrays are "
                             "not the ones this report saved; an interrupted write or a file of "
                             "another run): run the evaluation again")
        check_report_arrays(arrays, report, sidecar.name)
        return dataclasses.replace(report, arrays=arrays)

    def compare(self, other: Report, *, n_bootstrap: int = 1000, seed: int = 0):
        """This report (A) against ``other`` (B): a pandas DataFrame with every metric of both,
        ``delta = B − A``, and McNemar's exact test plus a paired bootstrap CI of each accuracy
        difference when both runs saved per-sample predictions on the same test set (see
        :func:`probekit.compare.compare_reports`)."""
        from probekit.compare import compare_reports

        return compare_reports(self, other, n_bootstrap=n_bootstrap, seed=seed)

    def to_frame(self):
        """A pandas DataFrame with one row per (probe, vote, k, metric): columns ``probe``,
        ``vote``, ``k``, ``metric``, ``value``, ``ci95_low``, ``ci95_high`` (the interval is on
        the accuracy rows, or the mAP rows of multi-label data) and ``std`` (k-fold only)."""
        import pandas as pd

        rows = []
        keys, main = (TAG_KEYS, "map") if self.task == "multilabel" else (SCORE_KEYS, "accuracy")
        for vote in self.votes:
            for k, scores in self.knn[vote].items():
                rows += _metric_rows("knn", vote, int(k), scores, keys, main)
        rows += _metric_rows("linear", None, None, self.linear, keys, main)
        frame = pd.DataFrame(rows, columns=["probe", "vote", "k", "metric", "value",
                                            "ci95_low", "ci95_high", "std"])
        return frame.astype({"k": "Int64"})

    @property
    def task(self) -> str:
        """``"multiclass"`` (one label per sample) or ``"multilabel"`` (tags)."""
        return self.protocol.get("task", "multiclass")

    @property
    def main_metric(self) -> str:
        """The headline score: ``"accuracy"``, or ``"map"`` for multi-label data."""
        return "map" if self.task == "multilabel" else "accuracy"

    @property
    def votes(self) -> list[str]:
        """The kNN votes the report holds (majority and weighted; weighted for tags)."""
        return [vote for vote in ("majority", "weighted") if vote in self.knn]

    # ---------------------------------------------------------------------- views
    # The text lives with the other views (probekit.render.text), which import nothing from
    # this module: these methods are the convenient way in.

    def reading(self) -> str:
        """One sentence reading the two probes together (:func:`probekit.render.text.reading`):
        the linear probe against a kNN setting fixed in advance, and only a significant paired
        difference earns a verdict."""
        from probekit.render.text import reading

        return reading(self)

    def to_markdown(self) -> str:
        """The summary the CLI prints (:func:`probekit.render.text.report_markdown`)."""
        from probekit.render.text import report_markdown

        return report_markdown(self)


def _metric_rows(probe, vote, k, scores: dict, keys=SCORE_KEYS, main="accuracy") -> list[tuple]:
    rows = []
    for name in keys:
        if scores.get(name) is None:
            continue
        low, high = scores["ci95"] if name == main else (math.nan, math.nan)
        rows.append((probe, vote, k, name, scores[name], low, high,
                     scores.get(f"{name}_std", math.nan)))
    return rows


# ---------------------------------------------------------------------- saved reports
# Reports and their sidecars read back from disk are untrusted input: their structure is
# checked once, on load, so that every view (markdown, frame, compare, figures, HTML) can rely
# on it and a malformed file is one line, not a traceback deep inside a figure.


def arrays_digest(arrays: dict) -> str:
    """SHA-256 of a report's arrays (names, dtypes, shapes and bytes, in name order): what ties
    a sidecar to the JSON that saved it."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class _Malformed(Exception):
    """Where a saved report departs from the structure its readers rely on."""


def _number(value, where: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise _Malformed(f"{where} should be a finite number, got {value!r:.40}")


def _integer(value, where: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Malformed(f"{where} should be an integer >= {minimum}, got {value!r:.40}")


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"{where} should be an object, got {type(value).__name__}")
    return value


def _listing(value, where: str, length: int | None = None) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        wanted = "a list" if length is None else f"a list of {length}"
        raise _Malformed(f"{where} should be {wanted}, got {value!r:.40}")
    return value


def _scores(scores, where: str, keys: tuple[str, ...], main: str) -> None:
    _mapping(scores, where)
    _number(scores.get(main), f"{where}.{main}", optional=main == "map")
    for key in keys:
        if key in scores:
            _number(scores[key], f"{where}.{key}", optional=True)
    low, high = _listing(scores.get("ci95"), f"{where}.ci95", 2)
    _number(low, f"{where}.ci95", optional=main == "map")
    _number(high, f"{where}.ci95", optional=main == "map")


def check_report_data(data, name: str) -> dict:
    """``data`` (a parsed report JSON) if it has the structure of a probekit report; else
    :class:`InputError` naming the first thing that is wrong."""
    try:
        _check_report(_mapping(data, "the report"))
    except _Malformed as error:
        raise InputError(f"{name} is not a probekit report: {error}") from None
    return data


def _check_report(data: dict) -> None:
    if not isinstance(data.get("probekit_version"), str):
        raise _Malformed("probekit_version should be a string")
    info, protocol = _mapping(data.get("input"), "input"), _mapping(data.get("protocol"),
                                                                     "protocol")
    knn, linear = _mapping(data.get("knn"), "knn"), _mapping(data.get("linear"), "linear")
    task = protocol.get("task", "multiclass")
    if task not in ("multiclass", "multilabel"):
        raise _Malformed(f"protocol.task should be multiclass or multilabel, got {task!r:.40}")
    tags = task == "multilabel"
    keys, main = (TAG_KEYS, "map") if tags else (SCORE_KEYS, "accuracy")
    split = protocol.get("split")
    if split not in ("given", "holdout", "kfold"):
        raise _Malformed(f"protocol.split should be given, holdout or kfold, got {split!r:.40}")
    if split == "kfold":
        _integer(protocol.get("folds"), "protocol.folds", 2)
    if split == "holdout":
        _number(protocol.get("test_size"), "protocol.test_size")
    _integer(protocol.get("seed"), "protocol.seed")
    if not isinstance(protocol.get("metric"), str):
        raise _Malformed("protocol.metric should be a string")
    for key in ("n_train", "n_test", "dim"):
        _integer(info.get(key), f"input.{key}")
    names, counts = ("tags", ("train_tag_counts", "test_tag_counts")) if tags else \
        ("classes", ("train_class_counts", "test_class_counts"))
    classes = _listing(info.get(names), f"input.{names}")
    if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes):
        raise _Malformed(f"input.{names} should hold names (strings or integers)")
    for key in counts:
        for count in _listing(info.get(key), f"input.{key}", len(classes)):
            _integer(count, f"input.{key}")
    if tags:
        _number(info.get("mean_tags_per_sample"), "input.mean_tags_per_sample")
    votes = ("weighted",) if tags else ("majority", "weighted")
    for vote in votes:
        settings = _mapping(knn.get(vote), f"knn.{vote}")
        if not settings:
            raise _Malformed(f"knn.{vote} holds no k")
        for k, scores in settings.items():
            if not k.isdigit() or int(k) < 1:
                raise _Malformed(f"knn.{vote} keys should be k values, got {k!r:.40}")
            _scores(scores, f"knn.{vote}.{k}", keys, main)
    best = _mapping(knn.get("best"), "knn.best")
    if best.get("vote") not in votes or str(best.get("k")) not in knn[best["vote"]]:
        raise _Malformed("knn.best should name a vote and k of the table")
    _number(best.get(main), f"knn.best.{main}", optional=tags)
    if not isinstance(knn.get("backend"), str):
        raise _Malformed("knn.backend should be a string")
    _scores(linear, "linear", keys, main)
    _number(linear.get("C"), "linear.C")
    geometry = _mapping(data.get("geometry", {}), "geometry")
    for key, value in geometry.items():
        if key not in ("protocol", "warnings"):
            _number(value, f"geometry.{key}")
    comparison = _mapping(data.get("linear_vs_knn", {}), "linear_vs_knn")
    if comparison:
        _integer(comparison.get("k"), "linear_vs_knn.k", 1)
        _integer(comparison.get("n_paired"), "linear_vs_knn.n_paired", 1)
        for key in ("linear", "knn", "p_value"):
            _number(comparison.get(key), f"linear_vs_knn.{key}")
        for value in _listing(comparison.get("difference_ci95"), "linear_vs_knn.difference_ci95",
                              2):
            _number(value, "linear_vs_knn.difference_ci95")
        if not isinstance(comparison.get("vote"), str):
            raise _Malformed("linear_vs_knn.vote should be a string")
    for note in _listing(data.get("warnings", []), "warnings"):
        if not isinstance(note, str):
            raise _Malformed("warnings should hold strings")
    for key, value in _mapping(data.get("timings", {}), "timings").items():
        _number(value, f"timings.{key}")


def check_report_arrays(arrays: dict, report: Report, name: str) -> None:
    """The sidecar's arrays have the shapes and kinds the figures and paired tests read; else
    :class:`InputError` naming the first that does not."""
    n_classes = len(report.input.get("classes", report.input.get("tags", [])))

    def fail(key: str, what: str):
        raise InputError(f"{name} is not the figure data of a probekit report: {key} should be "
                         f"{what}, got {arrays[key].dtype} of shape {arrays[key].shape}")

    def kind(key, kinds, ndim, finite=False):
        array = arrays[key]
        if array.dtype.kind not in kinds or array.ndim != ndim or (
                finite and not np.isfinite(array).all()):
            fail(key, f"a {ndim}-D array of kind {kinds}" + (" (finite)" if finite else ""))
        return array

    for key in ("confusion_linear", "confusion_knn"):
        if key in arrays:
            pairs = kind(key, "iu", 2)
            if pairs.shape[1:] != (3,) or (pairs < 0).any() or (pairs[:, 2] < 1).any() \
                    or (pairs[:, :2] >= n_classes).any():
                fail(key, f"rows (true, predicted, count) of classes below {n_classes}")
    if "projection_xy" in arrays:
        xy = kind("projection_xy", "f", 2, finite=True)
        if xy.shape[1] != 2:
            fail("projection_xy", "an n x 2 map")
        codes = kind("projection_codes", "iu", 1) if "projection_codes" in arrays else None
        is_test = kind("projection_is_test", "biu", 1) if "projection_is_test" in arrays \
            else None
        if codes is None or is_test is None or len(codes) != len(xy) or len(is_test) != len(xy):
            fail("projection_xy", "accompanied by projection_codes and projection_is_test of "
                 "its length")
        if len(codes) and (codes.min() < 0 or codes.max() >= n_classes):
            fail("projection_codes", f"codes in [0, {n_classes})")
    if "singular_values" in arrays:
        if (kind("singular_values", "f", 1, finite=True) < 0).any():
            fail("singular_values", "non-negative")
    if "k_occurrence" in arrays:
        if (kind("k_occurrence", "iu", 1) < 0).any():
            fail("k_occurrence", "non-negative counts")
    if "similarity_edges" in arrays:
        edges = kind("similarity_edges", "f", 1, finite=True)
        for key in ("similarity_same", "similarity_different"):
            if key not in arrays or kind(key, "iu", 1).shape != (max(len(edges) - 1, 0),):
                fail("similarity_edges", "followed by two histograms with one bin fewer")
    if "correct_knn" in arrays:
        columns = kind("correct_knn", "biu", 2).shape[1]
        settings = kind("correct_knn_settings", "U", 1) if "correct_knn_settings" in arrays \
            else None
        if settings is None or len(settings) != columns:
            fail("correct_knn", "accompanied by one correct_knn_settings entry per column")
    if "correct_linear" in arrays:
        kind("correct_linear", "biu", 1)
