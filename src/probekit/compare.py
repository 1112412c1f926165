"""Two embedding spaces side by side: every metric with its delta, and paired tests.

Two reports of the same protocol compare metric by metric (``B − A``). When both runs kept
their per-sample correctness (``dual_probe(..., save_predictions=True)``, ``probekit evaluate
--save-predictions``) on the same test set, each accuracy also gets

- McNemar's exact test: of the ``n = b + c`` samples the two runs disagree on (``b``: only A
  right, ``c``: only B right), under H0 ``b ~ Binomial(n, ½)``; two-sided
  ``p = min(1, 2 · P[X ≤ min(b, c)])`` (McNemar 1947; the exact form of Edwards 1948);
- a paired bootstrap 95 % interval of ``acc_B − acc_A``: the same resampled test rows for both
  runs (Efron & Tibshirani 1993, ch. 13).

Runs whose test sets differ (labels, their order, or the rows drawn) are refused for pairing:
a paired test on different samples would be meaningless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from probekit.errors import InputError
from probekit.geometry import GOOD_DIRECTION
from probekit.probes.metrics import mcnemar_exact, paired_difference_ci

if TYPE_CHECKING:  # reports are read as plain data; nothing is imported upward
    from probekit.report import Report

PAIRING_KEYS = ("correct_linear", "correct_knn", "correct_knn_settings", "pairing_linear",
                "pairing_knn")


def compare_reports(a: Report, b: Report, *, n_bootstrap: int = 1000, seed: int = 0):
    """A pandas DataFrame comparing two reports: one row per (probe, vote, k, metric) and per
    geometry diagnostic, columns ``probe, vote, k, metric, a, b, delta`` (``b − a``), plus
    ``p_mcnemar``, ``delta_ci95_low``, ``delta_ci95_high`` on the accuracy rows when both runs
    saved per-sample predictions on the same test set (NaN otherwise), and ``better`` (which
    run is better by the metric's direction, or ``"="``). ``frame.attrs["notes"]`` says when
    the runs were scored on different test sets; reports of different tasks (single-label vs
    multi-label) are refused."""
    import pandas as pd

    if a.task != b.task:
        raise InputError(f"cannot compare a {a.task} report with a {b.task} one: their metrics "
                         "differ")
    notes = []
    if a.input.get("test_labels_sha256") != b.input.get("test_labels_sha256"):
        notes.append("the two runs were scored on different test sets (their test labels "
                     "differ): the deltas compare different samples and are not paired")
    paired = _paired_columns(a, b, n_bootstrap=n_bootstrap, seed=seed)
    if not paired and not notes and a.task == "multiclass":
        missing = [name for name, report in (("A", a), ("B", b))
                   if not all(key in report.arrays for key in PAIRING_KEYS)]
        notes.append(f"no paired tests: {' and '.join(missing)} saved no per-sample "
                     "predictions; run probekit evaluate with --save-predictions --out for both "
                     "to get McNemar's test and the paired CI of each difference")
    rows = []
    frames = (a.to_frame(), b.to_frame())
    keyed = [{(r.probe, r.vote, r.k, r.metric): r.value for r in frame.itertuples()}
             for frame in frames]
    order = list(keyed[0]) + [key for key in keyed[1] if key not in keyed[0]]
    for key in order:
        probe, vote, k, metric = key
        if metric.endswith("_std"):
            continue
        value_a, value_b = keyed[0].get(key, np.nan), keyed[1].get(key, np.nan)
        setting = (probe, vote if isinstance(vote, str) else None,
                   None if pd.isna(k) else int(k))
        extra = paired.get(setting, {}) if metric == "accuracy" else {}
        rows.append({"probe": probe, "vote": vote, "k": k, "metric": metric, "a": value_a,
                     "b": value_b, "delta": value_b - value_a,
                     "p_mcnemar": extra.get("p_value", np.nan),
                     "delta_ci95_low": extra.get("low", np.nan),
                     "delta_ci95_high": extra.get("high", np.nan),
                     "better": _better(value_a, value_b, "up")})
    for name, direction in GOOD_DIRECTION.items():
        value_a, value_b = a.geometry.get(name), b.geometry.get(name)
        if not isinstance(value_a, (int, float)) and not isinstance(value_b, (int, float)):
            continue
        value_a = float(value_a) if isinstance(value_a, (int, float)) else np.nan
        value_b = float(value_b) if isinstance(value_b, (int, float)) else np.nan
        rows.append({"probe": "geometry", "vote": None, "k": None, "metric": name,
                     "a": value_a, "b": value_b, "delta": value_b - value_a,
                     "p_mcnemar": np.nan, "delta_ci95_low": np.nan, "delta_ci95_high": np.nan,
                     "better": _better(value_a, value_b, direction)})
    frame = pd.DataFrame(rows, columns=["probe", "vote", "k", "metric", "a", "b", "delta",
                                        "p_mcnemar", "delta_ci95_low", "delta_ci95_high",
                                        "better"])
    frame = frame.astype({"k": "Int64"})
    frame.attrs["notes"] = notes
    return frame


def _paired_columns(a: Report, b: Report, *, n_bootstrap: int, seed: int) -> dict:
    """``{(probe, vote, k): {"p_value", "low", "high"}}`` when both runs carry per-sample
    correctness on the same test set; {} when either run has none; an error when both have
    them but their test sets differ."""
    if not all(key in report.arrays for report in (a, b) for key in PAIRING_KEYS):
        return {}
    out = {}
    for probe in ("linear", "knn"):
        if str(a.arrays[f"pairing_{probe}"]) != str(b.arrays[f"pairing_{probe}"]):
            raise InputError(f"the two runs' {probe} probes were scored on different test sets "
                             "(labels, order or rows differ): paired tests need the same "
                             "samples")
    columns = [("linear", None, None, a.arrays["correct_linear"], b.arrays["correct_linear"])]
    settings_a = [str(s) for s in a.arrays["correct_knn_settings"]]
    settings_b = [str(s) for s in b.arrays["correct_knn_settings"]]
    for index, setting in enumerate(settings_a):
        if setting in settings_b:
            vote, _, k = setting.partition("@")
            columns.append(("knn", vote, int(k), a.arrays["correct_knn"][:, index],
                            b.arrays["correct_knn"][:, settings_b.index(setting)]))
    for probe, vote, k, correct_a, correct_b in columns:
        test = mcnemar_exact(correct_a, correct_b)
        low, high = paired_difference_ci(correct_a, correct_b, n_resamples=n_bootstrap,
                                         seed=seed)
        out[(probe, vote, k)] = {"p_value": test["p_value"], "low": low, "high": high}
    return out


def _better(value_a, value_b, direction: str) -> str:
    if np.isnan(value_a) or np.isnan(value_b) or direction == "none" or value_a == value_b:
        return "=" if value_a == value_b else ""
    return "B" if (value_b > value_a) == (direction == "up") else "A"
