"""Text views of results: the report's markdown summary, its one-sentence reading, the
geometry table, the comparison and layer-wise tables, and the number formats they share.

These functions read plain data: a report's ``input``, ``protocol``, ``knn``, ``linear``,
``linear_vs_knn`` and ``geometry`` dictionaries (any object with those attributes and the
``task`` property), a comparison DataFrame, a layer-wise report. They import nothing from
:mod:`probekit.report`; its ``to_markdown()`` and ``reading()`` call them.
"""

from __future__ import annotations

import math

import numpy as np

from probekit.geometry import GOOD_DIRECTION

LINEAR_AHEAD = 0.05  # linear - kNN above this (and significant): globally separable, locally mixed
CLOSE = 0.02  # the CI of kNN - linear inside [-this, +this]: the two probes agree
SIGNIFICANT = 0.05  # the p-value below which a paired difference counts


def reading(report) -> str:
    """One sentence reading the two probes together: the linear probe against a kNN
    setting fixed in advance (not the best one, which is picked on the test set), and only
    a difference that a paired test finds significant earns a verdict."""
    comparison = report.linear_vs_knn
    tags = report.task == "multilabel"
    if not comparison:
        return ("no paired comparison of the two probes is stored in this report (it was "
                "made by an older probekit): see the table")
    score = "mAP" if tags else ""
    linear, knn = 100 * comparison["linear"], 100 * comparison["knn"]
    low, high = (100 * value for value in comparison["difference_ci95"])
    unit = f" {score}" if tags else "%"
    versus = (f"linear {linear:.1f}{unit} vs kNN {knn:.1f}{unit} ({comparison['vote']} "
              f"vote, k={comparison['k']}, fixed in advance; {comparison['n_paired']} "
              "paired test samples)")
    test = "McNemar" if not tags else "paired bootstrap"
    evidence = (f"{test} {p_text(comparison['p_value'])}; kNN − linear 95% CI "
                f"[{low:+.1f}, {high:+.1f}] points")
    gap = linear - knn
    chance = chance_level(report)
    fixed = report.knn[comparison["vote"]].get(str(comparison["k"]), {})
    best_low = max(report.linear["ci95"][0] or 0.0, (fixed.get("ci95") or [0.0])[0] or 0.0)
    if chance is not None and best_low <= chance:
        verdict = (f"neither probe is clearly above chance ({evidence}; "
                   + (f"random scores would reach a mAP of about {100 * chance:.1f}"
                      if tags else f"always predicting the largest class scores "
                      f"{100 * chance:.1f}%") + "): the space shows no class structure "
                   "these probes can find.")
    elif -100 * CLOSE <= low and high <= 100 * CLOSE:
        verdict = (f"kNN is within {100 * CLOSE:.0f} points of linear ({evidence}), so "
                   + ("neighbours share their tags about as well as a linear read-out "
                      "finds them: the space is organised by its tags locally too."
                      if tags else "classes form tight, well-separated clusters (what "
                      "contrastive tuning aims for)."))
    elif comparison["p_value"] >= SIGNIFICANT:
        verdict = (f"no significant difference ({evidence}): these "
                   f"{comparison['n_paired']} test samples cannot tell the two probes "
                   "apart.")
    elif gap > 100 * LINEAR_AHEAD:
        verdict = (f"linear >> kNN by {gap:.1f} points ({evidence}), so "
                   + ("the tags are linearly decodable but neighbours do not share them."
                      if tags else "the classes are globally linearly separable but "
                      "locally mixed (typical of cross-entropy fine-tuning)."))
    elif gap > 0:
        verdict = (f"linear leads kNN by {gap:.1f} points ({evidence}), so the "
                   f"{'tags' if tags else 'classes'} are mostly separable with some local "
                   "mixing.")
    else:
        verdict = (f"kNN beats linear by {-gap:.1f} points ({evidence}), so "
                   + ("neighbours predict the tags better than any linear read-out."
                      if tags else "the class structure is local and not linear "
                      "(clusters that no single hyperplane separates)."))
    return f"{versus}: {verdict}"

def chance_level(report) -> float | None:
    """The score of a probe that knows nothing: the largest class's share of the test set
    (accuracy), or the mean prevalence of the tags (about the mAP of random scores)."""
    info = report.input
    n_test = info.get("n_test") or 0
    if not n_test:
        return None
    if report.task == "multilabel":
        counts = [count for count in info.get("test_tag_counts", []) if count]
        return sum(counts) / len(counts) / n_test if counts else None
    counts = info.get("test_class_counts", [])
    return max(counts) / sum(counts) if counts and sum(counts) else None

def _tag_markdown(report) -> str:
    info, protocol = report.input, report.protocol
    tags = [f"{name} ({train}/{test})" for name, train, test in zip(
        info["tags"], info["train_tag_counts"], info["test_tag_counts"], strict=True)]
    shown = ", ".join(tags[:20]) + (f", and {len(tags) - 20} more" if len(tags) > 20 else "")
    lines = [
        f"# probekit dual probe, multi-label (v{report.probekit_version})", "",
        f"{info['n_train']} train / {info['n_test']} test samples, {info['dim']} "
        f"dimensions, {info['n_tags']} tags ({info['mean_tags_per_sample']:.2f} per "
        f"training sample); split: {split_text(protocol)}; metric: {protocol['metric']}; seed "
        f"{protocol['seed']}.", "", f"Tags: {shown} (train/test counts).", "",
        "| probe | setting | mAP | 95% CI | ROC-AUC | d′ | micro-F1 | macro-F1 | "
        "micro-F1 tuned | macro-F1 tuned |", "|---|---|---|---|---|---|---|---|---|---|",
        _tag_row("linear", f"C={c_text(report.linear)}", report.linear)]
    for k, scores in report.knn["weighted"].items():
        lines.append(_tag_row("kNN", f"k={k} weighted", scores))
    best = report.knn["best"]
    lines += ["", f"Best kNN: k={best['k']} ({100 * best['map']:.2f} mAP; picked on the test "
                  f"set, so slightly optimistic). Search backend: {report.knn['backend']}. "
                  "F1 at 0.5, and at per-tag thresholds tuned on the validation split.",
              *_search_lines(report.knn), "", f"**Reading:** {reading(report)}"]
    if report.geometry:
        lines += ["", *markdown_table(report.geometry, "Geometry of the training rows")]
    if report.warnings:
        lines += ["", "Warnings:"] + [f"- {warning}" for warning in report.warnings]
    return "\n".join(lines) + "\n"

def _search_lines(knn: dict) -> list[str]:
    line = search_text(knn)
    return [] if line is None else ["", line]


def report_markdown(report) -> str:
    """The summary the CLI prints: input, both probes side by side, the reading, warnings
    (the multi-label form for tags)."""
    if report.task == "multilabel":
        return _tag_markdown(report)
    info, protocol = report.input, report.protocol
    lines = [
        f"# probekit dual probe (v{report.probekit_version})",
        "",
        f"{sizes_text(info, protocol)}, {info['dim']} dimensions, "
        f"{info['n_classes']} classes; split: {split_text(protocol)}; metric: "
        f"{protocol['metric']}; seed {protocol['seed']}.",
        "",
        f"Classes: {classes_text(info, protocol)}.",
        "",
        "| probe | setting | accuracy | 95% CI | balanced acc. | macro-F1 |"
        + (" top-5 |" if "top5_accuracy" in report.linear else ""),
        "|---|---|---|---|---|---|" + ("---|" if "top5_accuracy" in report.linear else ""),
    ]
    lines.append(_table_row("linear", f"C={c_text(report.linear)}", report.linear))
    for k in report.knn["majority"]:
        majority, weighted = report.knn["majority"][k], report.knn["weighted"][k]
        lines.append(_table_row("kNN", f"k={k} majority", majority))
        lines.append(_table_row("kNN", f"k={k} weighted", weighted))
    best = report.knn["best"]
    lines += [
        "",
        f"Best kNN: {best['vote']} vote at k={best['k']} "
        f"({100 * best['accuracy']:.2f}%; picked among the settings on the test set, so "
        f"slightly optimistic). Search backend: {report.knn['backend']}.",
        *_search_lines(report.knn),
        "",
        f"**Reading:** {reading(report)}",
    ]
    if report.geometry:
        lines += ["", *markdown_table(report.geometry, "Geometry of the training rows")]
    if report.warnings:
        lines += ["", "Warnings:"] + [f"- {warning}" for warning in report.warnings]
    return "\n".join(lines) + "\n"



def search_text(knn: dict) -> str | None:
    """One line on what an approximate kNN search cost (None when the search was exact): the
    index and its knobs, the measured recall at the fixed k, and the sample's score both
    ways."""
    check = knn.get("approximation")
    if not check:
        return None
    method = check["method"]
    if method["name"] == "ivf":
        index = f"IVF, {method['nlist']} lists, {method['nprobe']} probed per query"
    else:
        index = f"HNSW, M={method['M']}, efSearch={method['ef_search']}"
    scored = check.get("accuracy") or check.get("map")
    k = str(scored["k"]) if scored else max(check["recall"], key=int)
    line = (f"Approximate search ({index}): recall@{k} {check['recall'][k]:.3f} against "
            f"exact search on {check['n_queries']} sampled queries")
    if "accuracy" in check:
        moved = check["largest_difference"]
        line += (f"; their accuracy ({scored['vote']}, k={k}) {percent(scored['exact'])}% "
                 f"exact vs {percent(scored['approximate'])}% approximate (largest change "
                 f"over the settings: {100 * moved['difference']:+.2f} points, "
                 f"{moved['vote']} k={moved['k']})")
    elif "map" in check:
        line += (f"; their mAP ({scored['vote']}, k={k}) {percent(scored['exact'])} exact vs "
                 f"{percent(scored['approximate'])} approximate")
    return line + "."


def p_text(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _table_row(probe: str, setting: str, scores: dict) -> str:
    accuracy = percent(scores["accuracy"])
    if "accuracy_std" in scores:
        accuracy += f" ± {percent(scores['accuracy_std'])}"
    low, high = scores["ci95"]
    cells = [probe, setting, accuracy, f"[{percent(low)}, {percent(high)}]",
             percent(scores["balanced_accuracy"]), percent(scores["macro_f1"])]
    if "top5_accuracy" in scores:
        cells.append(percent(scores["top5_accuracy"]))
    return "| " + " | ".join(cells) + " |"


def _tag_row(probe: str, setting: str, scores: dict) -> str:
    def cell(name):
        value = scores.get(name)
        return "–" if value is None or math.isnan(value) else percent(value)

    low, high = scores["ci95"]
    d_prime = scores.get("d_prime")
    cells = [probe, setting, cell("map"), f"[{percent(low)}, {percent(high)}]",
             cell("roc_auc"),
             "–" if d_prime is None or math.isnan(d_prime) else f"{d_prime:.2f}",
             cell("micro_f1"), cell("macro_f1"), cell("micro_f1_tuned"),
             cell("macro_f1_tuned")]
    return "| " + " | ".join(cells) + " |"


def classes_text(info: dict, protocol: dict, shown: int = 20) -> str:
    """Class names with their train/test counts, the first ``shown`` of them; under k-fold,
    every sample is tested once, so a class's count is its size (the folds split it)."""
    if protocol.get("split") == "kfold":
        names = [f"{name} ({count})" for name, count in zip(
            info["classes"], info["test_class_counts"], strict=True)]
        folds = protocol["folds"]
        what = f"samples per class; each fold tests 1/{folds} of them and trains on the rest"
    else:
        names = [f"{name} ({train}/{test})" for name, train, test in zip(
            info["classes"], info["train_class_counts"], info["test_class_counts"],
            strict=True)]
        what = "train/test counts"
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more + f" ({what})"


def c_text(linear: dict) -> str:
    return f"{linear['C']:g}"


def sizes_text(info: dict, protocol: dict) -> str:
    if protocol["split"] == "kfold":
        folds = protocol["folds"]
        return (f"{info['n_samples']} samples in {folds} folds ({info['n_train']} train / "
                f"{info['n_test'] // folds} test per fold)")
    return f"{info['n_train']} train / {info['n_test']} test samples"


def split_text(protocol: dict) -> str:
    split = protocol["split"]
    if split == "holdout":
        kind = "stratified" if protocol.get("stratified", True) else "random"
        text = f"{kind} holdout ({protocol['test_size']:g} test)"
    elif split == "kfold":
        text = f"stratified {protocol['folds']}-fold (mean ± std)"
    else:
        text = "given train/test"
    if protocol.get("loo"):
        text += "; kNN leave-one-out over all samples"
    return text


ARROWS = {"up": "↑", "down": "↓", "none": "·"}


def markdown_table(values: dict, title: str, per_row: int = 3) -> list[str]:
    """Geometry values as markdown lines: ``per_row`` values a row, each with an arrow for its
    good direction (↑ higher is better, ↓ lower is better, · descriptive)."""
    cells = [f"{key} {ARROWS[GOOD_DIRECTION[key]]} | {number_text(value)}"
             for key, value in values.items() if key in GOOD_DIRECTION]
    header = " | ".join(["diagnostic | value"] * per_row)
    lines = [f"{title} (↑ higher is better, ↓ lower is better, · descriptive):", "",
             f"| {header} |", "|" + "---|" * (2 * per_row)]
    for start in range(0, len(cells), per_row):
        row = cells[start:start + per_row]
        row += [" | "] * (per_row - len(row))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def geometry_markdown(geometry, title: str = "Geometry") -> str:
    """A :class:`~probekit.geometry.Geometry` as a compact table with good-direction arrows,
    then any warnings."""
    lines = markdown_table(geometry.values, title)
    if geometry.warnings:
        lines += ["", "Warnings:"] + [f"- {warning}" for warning in geometry.warnings]
    return "\n".join(lines) + "\n"


def layers_markdown(layerwise) -> str:
    """A :class:`~probekit.layers.LayerwiseReport` as the layer table: the linear and best-kNN
    score of every layer with their CIs, the best layer by each probe, the warnings."""
    first = layerwise.reports[0]
    info, protocol = first.input, first.protocol
    lines = [f"# probekit layer-wise dual probe (v{first.probekit_version})", "",
             f"{len(layerwise.names)} layers; {info['n_train']} train / {info['n_test']} test "
             f"samples, {info.get('n_classes', info.get('n_tags'))} "
             f"{'tags' if first.task == 'multilabel' else 'classes'}; split: "
             f"{protocol['split']}; seed "
             f"{protocol['seed']}; one split for every layer.", "",
             "| layer | linear | 95% CI | best kNN | 95% CI | vote, k |",
             "|---|---|---|---|---|---|"]
    for row in layerwise.to_frame().itertuples():
        lines.append(f"| {row.layer} | {100 * row.linear:.2f} | "
                     f"[{100 * row.linear_ci_low:.2f}, {100 * row.linear_ci_high:.2f}] | "
                     f"{100 * row.knn:.2f} | [{100 * row.knn_ci_low:.2f}, "
                     f"{100 * row.knn_ci_high:.2f}] | {row.knn_vote}, {row.knn_k} |")
    lines += ["", f"Best layer: {layerwise.best_layer('linear')} by the linear probe, "
                  f"{layerwise.best_layer('knn')} by kNN."]
    notes = sorted({note for report in layerwise.reports for note in report.warnings})
    if notes:
        lines += ["", "Warnings:"] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def number_text(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def comparison_markdown(frame, name_a: str = "A", name_b: str = "B", *,
                        cka: float | None = None) -> str:
    """The comparison as the CLI prints it: accuracy rows (with the paired test when present),
    then the other probe metrics and the geometry."""
    def number(value, percent):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "–"
        return f"{100 * value:.2f}" if percent else f"{value:.4g}"

    lines = [f"# probekit compare: A = {name_a}, B = {name_b}", ""]
    if cka is not None:
        lines += [f"Linear CKA between the two spaces (same samples): {cka:.4f}", ""]
    lines += ["| probe | setting | metric | A | B | B − A | 95% CI of B − A | McNemar p | better |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in frame.itertuples():
        percent = row.probe != "geometry" and row.metric != "d_prime"
        setting = ("" if row.probe in ("linear", "geometry")
                   else f"k={row.k} {row.vote}")
        interval = ("–" if np.isnan(row.delta_ci95_low) else
                    f"[{100 * row.delta_ci95_low:+.2f}, {100 * row.delta_ci95_high:+.2f}]")
        p_value = "–" if np.isnan(row.p_mcnemar) else f"{row.p_mcnemar:.3g}"
        delta = "–" if np.isnan(row.delta) else (
            f"{100 * row.delta:+.2f}" if percent else f"{row.delta:+.4g}")
        lines.append(f"| {row.probe} | {setting} | {row.metric} | {number(row.a, percent)} | "
                     f"{number(row.b, percent)} | {delta} | {interval} | {p_value} | "
                     f"{row.better} |")
    lines += ["", "Probe metrics in percent (deltas in points); geometry values as they are; "
              "'better' follows each metric's good direction (blank: descriptive)."]
    for note in frame.attrs.get("notes", []):
        lines += ["", f"Note: {note}."]
    return "\n".join(lines) + "\n"
