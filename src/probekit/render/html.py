"""One self-contained HTML report: tables, the reading, warnings, protocol, versions, and every
figure embedded as a base64 PNG. No scripts, fonts or images are fetched when it is opened."""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from probekit.files import write_atomically
from probekit.geometry import GOOD_DIRECTION
from probekit.render.text import percent, search_text, sizes_text, split_text

if TYPE_CHECKING:  # the page reads a report's plain data; nothing is imported upward
    from probekit.report import Report

_ARROWS = {"up": "&uarr;", "down": "&darr;", "none": "&middot;"}
_CAPTIONS = {
    "projection": "2-D map of the embeddings",
    "knn_curve": "kNN accuracy vs k and the linear probe",
    "confusion": "Confusion matrix of the better probe",
    "per_class": "Per-class accuracy, linear vs kNN",
    "similarity": "Same-class vs different-class similarities",
    "spectrum": "Singular value spectrum",
    "k_occurrence": "Hubness (k-occurrence)",
}
# figures shown at their own size across the page (their labels are too small at half width);
# the others two to a row
_WIDE = ("projection", "knn_curve", "confusion", "per_class")
_STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:28px 0 10px;
border-bottom:1px solid #dde1e6;padding-bottom:4px}
.sub{color:#555;margin:0 0 14px}
.reading{background:#fff;border-left:4px solid #0072B2;padding:12px 16px;margin:14px 0;
box-shadow:0 1px 2px rgba(0,0,0,.06)}
table{border-collapse:collapse;background:#fff;font-size:13.5px;
box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:5px 10px;border-bottom:1px solid #eceff2;text-align:right}
th{background:#eef1f5;font-weight:600}td:first-child,th:first-child,td.l{text-align:left}
tr.best td{background:#fff7e0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:16px}
figure{margin:0;min-width:0;background:#fff;padding:10px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
figure img{width:100%;height:auto}figcaption{font-size:13px;color:#444;margin-top:4px}
figure.wide{grid-column:1/-1;text-align:center}figure.wide img{width:auto;max-width:100%}
figure.wide figcaption{text-align:left}p.lead{margin:14px 0 0}ul.confusions{margin-top:4px}
.warn{background:#fff4f0;border-left:4px solid #D55E00;padding:8px 14px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(430px,1fr));gap:0 24px;
align-items:start}
table.kv{width:100%;table-layout:fixed}table.kv td{text-align:left;vertical-align:top;
overflow-wrap:anywhere}table.kv td:first-child{width:38%;color:#444}
table.kv code{font-size:12px}.more{color:#777}
"""


def render(report: Report, figures: dict[str, bytes]) -> str:
    """The HTML text of ``report`` with ``figures`` (name -> PNG bytes) embedded."""
    info, protocol = report.input, report.protocol
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>probekit report</title><style>{_STYLE}</style></head><body><main>",
        "<h1>probekit dual probe</h1>",
        f"<p class='sub'>{html.escape(sizes_text(info, protocol))}, {info['dim']} dimensions, "
        f"{_label_count(info)}; split: {html.escape(split_text(protocol))}; metric "
        f"{html.escape(protocol['metric'])}; seed {protocol['seed']}</p>",
        f"<div class='reading'><strong>Reading.</strong> {html.escape(report.reading())}</div>",
        "<h2>Probes</h2>", _probe_table(report), _search_paragraph(report),
        _confusions(report),
    ]
    if report.warnings:
        parts += ["<h2>Warnings</h2><div class='warn'><ul>"]
        parts += [f"<li>{html.escape(note)}</li>" for note in report.warnings]
        parts += ["</ul></div>"]
    if figures:
        parts += ["<h2>Figures</h2><div class='grid'>"]
        for name, png in figures.items():
            data = base64.b64encode(png).decode("ascii")
            caption = html.escape(_figure_caption(name, report))
            wide = " class='wide'" if name in _WIDE else ""
            parts.append(f"<figure{wide}><img alt='{caption}' "
                         f"src='data:image/png;base64,{data}'>"
                         f"<figcaption>{caption}</figcaption></figure>")
        parts.append("</div>")
    if report.geometry:
        parts += ["<h2>Geometry of the training rows</h2>", _geometry_table(report.geometry)]
    parts += [
        "<div class='cols'><section><h2>Protocol</h2>", _key_value_table(protocol),
        "</section><section><h2>Input</h2>", _key_value_table(_input_rows(info)),
        "<h2>Versions</h2>", _key_value_table(_versions(report)), "</section></div>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _search_paragraph(report: Report) -> str:
    line = search_text(report.knn)
    return "" if line is None else f"<p class='lead'>{html.escape(line)}</p>"


def _figure_caption(name: str, report: Report) -> str:
    caption = _CAPTIONS.get(name, name)
    if report.main_metric == "map":  # tags: the curve is of mAP
        caption = caption.replace("accuracy", "mAP")
    return caption


def write_html(report: Report, path, *, figures: dict[str, bytes] | None = None) -> Path:
    """Write the self-contained HTML report (figures rendered from the report's arrays when not
    given) atomically to ``path``."""
    if figures is None:
        figures = render_figures(report)
    path = Path(path)
    write_atomically(path, render(report, figures))
    return path


def render_figures(report: Report, dpi: int = 110) -> dict[str, bytes]:
    """Every figure the report has data for, as PNG bytes."""
    from probekit.render import plots

    plt = plots.pyplot()
    out = {}
    for name in plots.FIGURES:
        if not plots.has_data(report, name):
            continue
        with plots.figure_style():
            fig = getattr(plots, name)(report)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None},
                        bbox_inches="tight")
        plt.close(fig)
        out[name] = buffer.getvalue()
    return out


def _confusions(report: Report) -> str:
    """The largest confusions of the better probe, in words (the matrix stops naming classes
    above 50 of them)."""
    from probekit.render.plots import better_probe, confusion_phrase, largest_confusions

    key, title = better_probe(report)
    if key not in report.arrays:
        return ""
    names = [str(name) for name in report.input["classes"]]
    confusions = largest_confusions(report.arrays[key], names, top=10)
    if not confusions:
        return ""
    items = "".join(
        f"<li>{html.escape(confusion_phrase(a, b, share))} ({count} of {size} test "
        f"samples)</li>" for a, b, share, count, size in confusions)
    return (f"<p class='sub lead'>Largest confusions of the "
            f"{html.escape(title)}:</p><ul class='confusions'>{items}</ul>")


def _label_count(info: dict) -> str:
    if "n_tags" in info:
        return f"{info['n_tags']} tags (multi-label)"
    return f"{info['n_classes']} classes"


def _tag_table(report: Report) -> str:
    head = ["probe", "setting", "mAP (%)", "95% CI", "ROC-AUC", "d′", "micro-F1", "macro-F1",
            "micro-F1 tuned", "macro-F1 tuned"]
    rows = [("linear", f"C={report.linear['C']:g}", report.linear, False)]
    best = report.knn["best"]
    rows += [("kNN", f"k={k} weighted", scores, int(k) == best["k"])
             for k, scores in report.knn["weighted"].items()]

    def cell(value):
        return "–" if value is None else percent(value)

    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for probe, setting, scores, is_best in rows:
        d_prime = scores.get("d_prime")
        cells = [probe, setting, cell(scores["map"]),
                 f"[{cell(scores['ci95'][0])}, {cell(scores['ci95'][1])}]",
                 cell(scores.get("roc_auc")), "–" if d_prime is None else f"{d_prime:.2f}",
                 cell(scores.get("micro_f1")), cell(scores.get("macro_f1")),
                 cell(scores.get("micro_f1_tuned")), cell(scores.get("macro_f1_tuned"))]
        lines.append(f"<tr{' class=best' if is_best else ''}>"
                     + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(lines) + "</table>"


def _probe_table(report: Report) -> str:
    if report.task == "multilabel":
        return _tag_table(report)
    top5 = "top5_accuracy" in report.linear
    head = ["probe", "setting", "accuracy (%)", "95% CI", "balanced acc.", "macro-F1"]
    head += ["top-5"] if top5 else []
    rows = [("linear", f"C={report.linear['C']:g}", report.linear, False)]
    best = report.knn["best"]
    for k in report.knn["majority"]:
        for vote in ("majority", "weighted"):
            is_best = vote == best["vote"] and int(k) == best["k"]
            rows.append(("kNN", f"k={k} {vote}", report.knn[vote][k], is_best))
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for probe, setting, scores, is_best in rows:
        cells = [probe, setting, percent(scores["accuracy"]),
                 f"[{percent(scores['ci95'][0])}, {percent(scores['ci95'][1])}]",
                 percent(scores["balanced_accuracy"]), percent(scores["macro_f1"])]
        cells += [percent(scores["top5_accuracy"])] if top5 else []
        lines.append(f"<tr{' class=best' if is_best else ''}>"
                     + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(lines) + "</table>"


def _geometry_table(geometry: dict, per_row: int = 3) -> str:
    cells = [(key, value) for key, value in geometry.items() if key in GOOD_DIRECTION]
    lines = ["<table><tr>" + "<th>diagnostic</th><th>value</th>" * per_row + "</tr>"]
    for start in range(0, len(cells), per_row):
        row = "".join(f"<td class='l'>{html.escape(key)} {_ARROWS[GOOD_DIRECTION[key]]}</td>"
                      f"<td>{value:.4g}</td>" for key, value in cells[start:start + per_row])
        lines.append(f"<tr>{row}</tr>")
    return "\n".join(lines) + "</table><p class='sub'>&uarr; higher is better, &darr; lower " \
        "is better, &middot; descriptive.</p>"


def _input_rows(info: dict) -> dict:
    """The input section with each class (or tag) and its train/test counts on one row."""
    shown = dict(info)
    for names, unit in (("classes", "class"), ("tags", "tag")):
        counts = (f"train_{unit}_counts", f"test_{unit}_counts")
        if names in shown and all(key in shown for key in counts):
            items = [f"{name}\u00a0({train}/{test})" for name, train, test in zip(
                shown.pop(names), shown.pop(counts[0]), shown.pop(counts[1]), strict=True)]
            shown[f"{names} (train/test samples)"] = items
    return shown


_LIST_LIMIT = 12  # items of a list shown before "… N more" (30 classes or tags)


def _key_value_table(data: dict) -> str:
    """A two-column table of ``data``: nested dictionaries as ``outer.inner`` keys, lists
    shortened, numbers rounded, booleans as yes/no."""
    rows = "".join(f"<tr><td>{html.escape(key)}</td><td>{_value_html(key, value)}</td></tr>"
                   for key, value in _flatten(data))
    return f"<table class='kv'>{rows}</table>"


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, value))
    return rows


def _value_html(key: str, value) -> str:
    """One value of a key-value table, as escaped HTML."""
    if isinstance(value, str) and key.endswith("sha256"):
        return f"<code>{html.escape(value)}</code>"
    if isinstance(value, list | tuple):
        limit = 30 if key.startswith(("classes", "tags")) else _LIST_LIMIT
        text = html.escape(", ".join(_value_text(item) for item in value[:limit]))
        if len(value) > limit:
            text += f", <span class='more'>… {len(value) - limit} more</span>"
        return text or "–"
    text = _value_text(value)
    if key.endswith("bytes") and isinstance(value, int) and value >= 1024:
        text += f" ({_size_text(value)})"
    return html.escape(text)


def _value_text(value) -> str:
    """A scalar as a person reads it: yes/no, "–" for none, 4 significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "–"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.4g}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)


def _size_text(size: float) -> str:
    """A byte count in KiB, MiB or GiB."""
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
    return ""


def _versions(report: Report) -> dict:
    """The report's probekit version, and the libraries on the machine that rendered it."""
    versions = {"probekit (report)": report.probekit_version,
                "python (render)": platform.python_version()}
    for name in ("numpy", "scipy", "sklearn", "faiss", "matplotlib", "umap"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            continue
    return versions
