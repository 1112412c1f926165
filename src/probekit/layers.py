"""Layer-wise probing: the dual probe of every layer of an encoder, on one protocol.

Pre-trained audio transformers keep their best task information in middle layers (e.g. Pasad
et al., "Layer-wise analysis of a self-supervised speech representation model", ASRU 2021);
probing every layer shows where, and whether tuning moved it. Every layer gets the same label
encoding, the same split and the same seed (the split depends only on the labels and the seed),
so the layers' scores differ only because their embeddings differ. Layers are probed one at a
time: with a memory-mapped L x N x D stack only one layer is in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit.dual import dual_probe
from probekit.errors import InputError
from probekit.report import Report, write_atomically
from probekit.version import __version__


@dataclass(frozen=True)
class LayerwiseReport:
    """The dual probe of every layer: ``names[i]`` and ``reports[i]`` belong together."""

    names: tuple[str, ...]
    reports: tuple[Report, ...]

    def to_frame(self):
        """One row per layer: ``layer``, ``index``, ``linear``, ``linear_ci_low/high``,
        ``knn`` (the best kNN setting's score), ``knn_vote``, ``knn_k``, ``knn_ci_low/high``;
        the score is the accuracy, or the mAP for multi-label data."""
        import pandas as pd

        rows = []
        for index, (name, report) in enumerate(zip(self.names, self.reports, strict=True)):
            best, metric = report.knn["best"], report.main_metric
            best_scores = report.knn[best["vote"]][str(best["k"])]
            rows.append({"layer": name, "index": index,
                         "linear": report.linear[metric],
                         "linear_ci_low": report.linear["ci95"][0],
                         "linear_ci_high": report.linear["ci95"][1],
                         "knn": best[metric], "knn_vote": best["vote"], "knn_k": best["k"],
                         "knn_ci_low": best_scores["ci95"][0],
                         "knn_ci_high": best_scores["ci95"][1]})
        return pd.DataFrame(rows)

    def best_layer(self, probe: str = "linear") -> str:
        """The layer with the highest ``probe`` accuracy (``"linear"`` or ``"knn"``, the best
        kNN setting); the earliest layer on ties."""
        if probe not in ("linear", "knn"):
            raise ValueError(f"probe must be linear or knn, got {probe}")
        values = self.to_frame()[probe].to_numpy()
        return self.names[int(np.argmax(values))]

    def to_dict(self) -> dict:
        summary = self.to_frame().to_dict(orient="records")
        return {"probekit_version": __version__, "layers": list(self.names),
                "best_layer": {"linear": self.best_layer("linear"),
                               "knn": self.best_layer("knn")},
                "summary": summary,
                "reports": [report.to_dict() for report in self.reports]}

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """Every layer's report plus the summary table, as JSON (atomically to ``path``)."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        if path is not None:
            write_atomically(Path(path), text)
        return text

    def to_markdown(self) -> str:
        """The layer table the CLI prints (:func:`probekit.render.text.layers_markdown`)."""
        from probekit.render.text import layers_markdown

        return layers_markdown(self)


def dual_probe_layers(layers, y, *, X_test=None, y_test=None,
                      names: Sequence[str] | None = None, geometry: bool = False,
                      progress=None, **options) -> LayerwiseReport:
    """:func:`probekit.dual_probe` of every layer, with one label encoding, split and seed.

    Parameters
    ----------
    layers : an (L, N, D) array (a memory map stays on disk: one layer is read at a time) or a
        sequence of L (N, D) arrays.
    y : (N,) labels, shared by every layer.
    X_test, y_test : a given test split: test layers in the same form as ``layers``.
    names : layer names (default ``layer 0`` ...).
    geometry : geometry diagnostics per layer (off by default: they multiply the cost by L).
    progress : ``progress(stage, done, total)``; stages are prefixed with the layer name.
    **options : anything :func:`probekit.dual_probe` takes (k, metric, folds, seed, ...).
    """
    count = len(layers)
    if count == 0:
        raise InputError("no layers to probe")
    names = list(names) if names is not None else [f"layer {i}" for i in range(count)]
    if len(names) != count:
        raise InputError(f"{len(names)} names for {count} layers")
    if X_test is not None and len(X_test) != count:
        raise InputError(f"{count} training layers but {len(X_test)} test layers")
    reports = []
    for index in range(count):
        def stage(label, done, total, name=names[index]):
            if progress is not None:
                progress(f"{name}: {label}", done, total)
        try:
            reports.append(dual_probe(
                layers[index], y, X_test=None if X_test is None else X_test[index],
                y_test=y_test, geometry=geometry, progress=stage, **options))
        except InputError as error:
            raise InputError(f"{names[index]}: {error}") from None
    return LayerwiseReport(tuple(names), tuple(reports))
