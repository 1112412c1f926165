"""Figures of a dual-probe report.

Every figure function takes a :class:`~probekit.report.Report` (with its ``arrays``, i.e. made
by ``dual_probe`` or loaded with :meth:`Report.load`) and returns a matplotlib ``Figure`` to
restyle or save. :func:`write_figures` writes them all. matplotlib is imported here only (the
CLI runs it headless on Agg); the 2-D map itself is computed by
:func:`probekit.geometry.projection.project_2d`.

Colours: the Okabe–Ito palette (colour-blind safe) for lines and up to 8 classes; for 9 to 20
classes :data:`DISTINCT_20`, 20 colours kept apart and dark enough for a white background (no
20 colours can all stay apart for colour-blind readers, so the map then also names each class
at its centre); above 20 classes and for matrices the perceptually uniform ``cividis`` map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
             "#000000")
# classes take Okabe–Ito's colours with the light yellow last (only an 8th class gets it)
_OKABE_ITO_CLASSES = tuple(OKABE_ITO[i] for i in (0, 1, 2, 4, 5, 6, 7, 3))
# 9 to 20 classes: Sasha Trubetskoy's 20 distinct colours with the ones too light for a white
# background (yellow, cyan, lime, pink, lavender, beige, mint, apricot) and the grey (the
# legend's neutral) replaced by darker ones chosen to keep every pair at least 17 CIEDE2000
# apart (20 up to 17 classes), every one at least 2:1 in contrast with white; the first n of
# them colour n classes
DISTINCT_20 = ("#E6194B", "#3CB44B", "#4363D8", "#F58231", "#911EB4", "#43B1FF", "#F032E6",
               "#DEA600", "#469990", "#9A6324", "#000000", "#E990A6", "#000075", "#808000",
               "#800000", "#B1A6E9", "#006437", "#904364", "#906FB1", "#B1B16F")
NEUTRAL = "#666666"  # legend entries that explain a marker rather than a class
LEGEND_MAX = 20  # classes named in a legend; above, a colour bar and names at the centroids
FIGURES = ("projection", "knn_curve", "confusion", "per_class", "similarity", "spectrum",
           "k_occurrence")


def pyplot():
    """pyplot, with whatever backend is active (the CLI sets MPLBACKEND=Agg; a notebook keeps
    its own; a machine without a display falls back to Agg by itself)."""
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- helpers


def class_colours(n: int) -> list:
    """One colour per class: Okabe–Ito up to 8 classes, :data:`DISTINCT_20` up to
    :data:`LEGEND_MAX`, then ``cividis`` (classes named at their centres, a colour bar)."""
    if n <= len(_OKABE_ITO_CLASSES):
        return list(_OKABE_ITO_CLASSES[:n])
    if n <= LEGEND_MAX:
        return list(DISTINCT_20[:n])
    cmap = pyplot().get_cmap("cividis")
    return [cmap(value) for value in np.linspace(0.0, 1.0, n)]


def _caption(fig, text: str) -> None:
    """A caption below the figure (figures are saved with a tight bounding box that takes it
    in), so however it wraps it never covers the axes."""
    fig.text(0.01, -0.01, text, ha="left", va="top", fontsize=8, color="#444444", wrap=True)


def _names(report) -> list[str]:
    """Class names as matplotlib draws them literally (a ``$`` would start mathtext)."""
    return [str(name).replace("$", r"\$") for name in report.input["classes"]]


def _need(report, *keys: str) -> None:
    missing = [key for key in keys if key not in report.arrays]
    if missing:
        raise ValueError(f"the report holds no {', '.join(missing)}: make it with dual_probe "
                         "(projection=True for the map) or load it with its .npz sidecar")


# ---------------------------------------------------------------------------- figures


def projection(report):
    """Scatter of the 2-D map coloured by class; training points as dots, test points as
    crosses (a grey legend says so); a legend of the classes up to 20 of them, and above 8
    classes (where colours alone no longer carry) each class named at its centre, with a colour
    bar above 20."""
    _need(report, "projection_xy", "projection_codes", "projection_is_test")
    plt = pyplot()
    xy, codes = report.arrays["projection_xy"], report.arrays["projection_codes"]
    is_test = report.arrays["projection_is_test"].astype(bool)
    names = _names(report)
    present = np.unique(codes)
    colours = class_colours(len(present))
    few = len(present) <= LEGEND_MAX
    fig, ax = plt.subplots(figsize=(8.5, 7.0) if few else (9.5, 8.0))
    size = float(np.clip(4000.0 / max(len(xy), 1), 2.0, 30.0))
    for colour, c in zip(colours, present, strict=True):
        mine = codes == c
        ax.scatter(*xy[mine & ~is_test].T, s=size, color=colour, alpha=0.7, linewidths=0,
                   marker="o")
        ax.scatter(*xy[mine & is_test].T, s=size * 1.6, color=colour, alpha=0.9, marker="x",
                   linewidths=0.8)
    info = report.protocol.get("projection", {})
    ax.set_title(f"{info.get('method', '2-D map')} of the embeddings, coloured by class")
    ax.set_xlabel("map axis 1")
    ax.set_ylabel("map axis 2")
    ax.set_aspect("equal", adjustable="datalim")
    if few:
        _class_legend(ax, colours, [names[c] for c in present])
    else:
        _colour_bar(fig, ax, len(present))
        ax.legend(handles=_marker_handles(), loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    if len(present) > len(_OKABE_ITO_CLASSES):
        _name_centres(ax, xy, codes, present, names, fontsize=7 if few else 6)
    sampled = info.get("n_points", len(xy)) < info.get("n_rows", len(xy))
    text = (f"{info.get('n_points', len(xy))} points"
            + (f" (stratified seeded sample of {info.get('n_rows')})" if sampled else "")
            + f"; trustworthiness {info.get('trustworthiness', float('nan')):.3f} "
              "(1 = neighbourhoods kept, 0.5 = random)")
    if info.get("warning"):
        text += f". {info['warning']}"
    _caption(fig, text)
    return fig


def _marker_handles() -> list:
    """Legend entries in a neutral grey that say what a training and a test point look like."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], linestyle="", marker="o", markersize=5, color=NEUTRAL,
                   label="train (dot)"),
            Line2D([], [], linestyle="", marker="x", markersize=6, markeredgewidth=1.2,
                   color=NEUTRAL, label="test (cross)")]


def _class_legend(ax, colours: list, labels: list[str]) -> None:
    """The classes' colours in one legend and the two marker shapes in another, both to the
    right of the axes."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker="o", markersize=6, color=colour,
                      label=label) for colour, label in zip(colours, labels, strict=True)]
    classes = ax.legend(handles=handles, title="class", fontsize=8, title_fontsize=8,
                        loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.add_artist(classes)
    classes.set_clip_on(False)  # else the saved figure's tight box leaves it out
    ax.legend(handles=_marker_handles(), title="points", fontsize=8, title_fontsize=8,
              loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)


def _colour_bar(fig, ax, n: int) -> None:
    plt = pyplot()
    cmap = plt.get_cmap("cividis", n)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-0.5, n - 0.5))
    bar = fig.colorbar(mappable, ax=ax, fraction=0.04, pad=0.02)
    bar.set_ticks(np.unique(np.linspace(0, n - 1, 6).round().astype(int)))
    bar.set_label("class index (names at the class centres)")


def _name_centres(ax, xy, codes, present, names, fontsize: int) -> None:
    """Each class's name at the median of its points, on a white halo so it reads over them;
    a name that would cover one placed before it moves up or down by whole line heights."""
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=2.0, foreground="white")]
    labels = [ax.annotate(names[c], np.median(xy[codes == c], axis=0), xytext=(0, 0),
                          textcoords="offset points", ha="center", va="center",
                          fontsize=fontsize, color="#111111", path_effects=halo)
              for c in present]
    _spread(ax, labels, step=1.2 * fontsize)


def _spread(ax, labels: list, step: float, tries: int = 6) -> None:
    """Shift each of ``labels`` (annotations placed in offset points) by the first of 0, +1,
    -1, +2, -2... ``step`` points at which it overlaps none of the labels before it; where
    every try overlaps it stays where it was. Needs a canvas that can measure text (Agg)."""
    get_renderer = getattr(ax.figure.canvas, "get_renderer", None)
    if get_renderer is None:
        return
    renderer = get_renderer()
    ax.apply_aspect()  # the limits "equal" sets at draw time, so boxes are where they will be
    placed = []
    for label in labels:
        for shift in [0] + [sign * i for i in range(1, tries + 1) for sign in (1, -1)]:
            label.xyann = (0, shift * step)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        else:
            label.xyann = (0, 0)
            box = label.get_window_extent(renderer)
        placed.append(box)


umap = projection  # the name the issue and the README use: probekit.render.plots.umap(report)


def knn_curve(report):
    """kNN accuracy against k for both votes with their 95 % bootstrap bands, and the linear
    probe as a horizontal line with its band: the dual probe in one picture."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    metric = report.main_metric
    ks = [int(k) for k in report.knn[report.votes[0]]]
    # hollow squares, larger, around the majority's dots: where the two votes agree both show
    styles = {"majority": (OKABE_ITO[4], "o", 5, OKABE_ITO[4]),
              "weighted": (OKABE_ITO[5], "s", 8, "none")}
    for vote in report.votes:
        colour, marker, size, face = styles[vote]
        scores = [report.knn[vote][str(k)] for k in ks]
        accuracy = 100 * np.array([s[metric] for s in scores])
        low = 100 * np.array([s["ci95"][0] for s in scores])
        high = 100 * np.array([s["ci95"][1] for s in scores])
        ax.plot(ks, accuracy, marker=marker, markersize=size, markerfacecolor=face,
                markeredgewidth=1.5, color=colour, label=f"kNN, {vote} vote")
        ax.fill_between(ks, low, high, color=colour, alpha=0.18, linewidth=0)
    linear = report.linear
    ax.axhline(100 * linear[metric], color=OKABE_ITO[7], linestyle="--",
               label=f"linear probe (C={linear['C']:g})")
    ax.axhspan(100 * linear["ci95"][0], 100 * linear["ci95"][1], color=OKABE_ITO[7],
               alpha=0.08, linewidth=0)
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("k (neighbours)")
    name = "mAP" if metric == "map" else "accuracy"
    ax.set_ylabel(f"test {name} (%)")
    ax.set_title(f"kNN {name} vs k, and the linear probe (bands: 95 % bootstrap CI)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    fig.tight_layout()
    _caption(fig, report.reading())
    return fig


def layer_curve(layerwise):
    """Linear and best-kNN accuracy of every layer of a
    :class:`~probekit.layers.LayerwiseReport`, with their 95 % bootstrap bands: where in the
    network the task information peaks."""
    plt = pyplot()
    frame = layerwise.to_frame()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(frame) + 3), 4.6))
    x = frame["index"].to_numpy()
    lines = (("linear", OKABE_ITO[7], "o", "linear probe"),
             ("knn", OKABE_ITO[5], "s", "best kNN (vote, k per layer)"))
    for probe, colour, marker, label in lines:
        ax.plot(x, 100 * frame[probe], marker=marker, color=colour, label=label)
        ax.fill_between(x, 100 * frame[f"{probe}_ci_low"], 100 * frame[f"{probe}_ci_high"],
                        color=colour, alpha=0.18, linewidth=0)
    ax.set_xticks(x)
    ax.set_xticklabels([str(name).replace("$", r"\$") for name in frame["layer"]],
                       rotation=45 if len(frame) > 8 else 0, ha="right" if len(frame) > 8
                       else "center")
    ax.set_xlabel("layer")
    ax.set_ylabel("test mAP (%)" if layerwise.reports[0].main_metric == "map"
                  else "test accuracy (%)")
    ax.set_title("Dual probe per layer (bands: 95 % bootstrap CI)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    fig.tight_layout()
    _caption(fig, f"best layer: {layerwise.best_layer('linear')} (linear), "
                  f"{layerwise.best_layer('knn')} (kNN)")
    return fig


def write_layer_curve(layerwise, directory, *, fmt: str = "png", dpi: int = 150) -> Path:
    """Write :func:`layer_curve` to ``directory/layers.<fmt>`` (deterministic bytes)."""
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"figure format must be png, svg or pdf, got {fmt}")
    plt = pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"layers.{fmt}"
    with figure_style():
        fig = layer_curve(layerwise)
        _save(fig, path, fmt, dpi)
    plt.close(fig)
    return path


def _save(fig, path: Path, fmt: str, dpi: int) -> None:
    """Save a figure atomically (a killed run leaves the old file, never a truncated one)."""
    from probekit.files import write_atomically

    write_atomically(path, lambda stream: fig.savefig(stream, format=fmt, dpi=dpi,
                                                      metadata=_METADATA[fmt],
                                                      bbox_inches="tight"))


def better_probe(report) -> tuple[str, str]:
    best, metric = report.knn["best"], report.main_metric
    if report.linear[metric] >= best[metric]:
        return "confusion_linear", f"linear probe (C={report.linear['C']:g})"
    return "confusion_knn", f"kNN, {best['vote']} vote, k={best['k']}"


CONFUSION_MAX = 200  # classes drawn in full; above, the classes with the most errors
CONFUSION_SHOWN = 40  # how many of those


def confusion(report, probe: str | None = None):
    """Row-normalised confusion matrix of the better probe (or ``probe`` = "linear"/"knn");
    class names on the axes up to 50 classes. Above :data:`CONFUSION_MAX` classes the matrix
    of the :data:`CONFUSION_SHOWN` classes with the most errors is drawn (rows and columns of
    those classes; their shares are of each whole class). The largest confusions are in the
    caption."""
    key, title = better_probe(report)
    if probe is not None:
        key = {"linear": "confusion_linear", "knn": "confusion_knn"}[probe]
        title = "linear probe" if probe == "linear" else "best kNN setting"
    _need(report, key)
    plt = pyplot()
    from matplotlib.colors import PowerNorm

    pairs = report.arrays[key]
    all_names = _names(report)
    shown = confused_classes(pairs, len(all_names), CONFUSION_SHOWN) \
        if len(all_names) > CONFUSION_MAX else np.arange(len(all_names))
    counts = dense_confusion(pairs, shown).astype(np.float64)
    names = [all_names[i] for i in shown]
    rows = np.bincount(pairs[:, 0], weights=pairs[:, 2], minlength=len(all_names))[shown]
    present = rows > 0
    # every class keeps its row (rows without test samples are grey), so row i is class i
    matrix = np.ma.masked_invalid(np.divide(counts, rows[:, None], out=np.full_like(counts,
                                  np.nan), where=present[:, None]))
    n = len(names)
    longest = max(len(name) for name in names) if n <= 50 else 0
    side = float(np.clip(3.0 + 0.22 * n, 5.0, 10.0)) + 0.07 * longest  # 50 names: 7 pt
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    cmap = plt.get_cmap("cividis").with_extremes(bad="#D9D9D9")
    # a square-root scale: the small off-diagonal shares (the confusions) stand out of the 0s
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    image = ax.imshow(matrix, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03,
                       label="share of the true class (square-root scale)")
    bar.set_ticks([0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
    if n <= 50:
        size = 9 if n <= 12 else 8 if n <= 25 else 7
        ax.set_xticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=size)
        ax.set_yticks(range(n))
        ax.set_yticklabels(names, fontsize=size)
        if n <= 12:
            for (i, j), value in np.ndenumerate(matrix.filled(np.nan)):
                if np.isfinite(value) and counts[i, j] > 0:  # no "0.00" where none went
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if norm(value) < 0.6 else "black")
    ax.set_xlabel("predicted class" + ("" if n <= 50 else " (class index)"))
    ax.set_ylabel("true class (grey: none in the test set)" if not present.all()
                  else "true class")
    subset = (f", the {n} of {len(all_names)} classes with the most errors"
              if n < len(all_names) else "")
    ax.set_title(f"Confusion matrix (row-normalised), {title}{subset}")
    fig.tight_layout()
    confusions = largest_confusions(pairs, all_names)
    _caption(fig, "Largest confusions: " + ("; ".join(
        confusion_phrase(*confusion[:3]) for confusion in confusions) or "none") + ".")
    return fig


def dense_confusion(pairs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The confusion matrix restricted to ``classes`` (rows true, columns predicted, in that
    order) from its (true, predicted, count) rows."""
    position = np.full(int(max(pairs[:, :2].max(initial=0), classes.max(initial=0))) + 1, -1)
    position[classes] = np.arange(len(classes))
    rows, cols = position[pairs[:, 0]], position[pairs[:, 1]]
    keep = (rows >= 0) & (cols >= 0)
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    matrix[rows[keep], cols[keep]] = pairs[keep, 2]
    return matrix


def confused_classes(pairs: np.ndarray, n_classes: int, count: int) -> np.ndarray:
    """The ``count`` classes with the most misclassified test samples (ties: lower index), in
    index order."""
    wrong = pairs[:, 0] != pairs[:, 1]
    errors = np.bincount(pairs[wrong, 0], weights=pairs[wrong, 2], minlength=n_classes)
    return np.sort(np.argsort(-errors, kind="stable")[:count])


def confusion_phrase(true: str, predicted: str, share: float) -> str:
    """One confusion in words, as the figures and the HTML report write it:
    ``"5.7 % of class 8 predicted as 1"``. Names holding a space are quoted, and a name that
    starts with "class " is not called "class class 8"."""
    def quoted(name: str) -> str:
        return f"‘{name}’" if any(char.isspace() for char in name) else name

    of = "" if true.lower().startswith("class ") else "class "
    return f"{100 * share:.1f} % of {of}{quoted(true)} predicted as {quoted(predicted)}"


def largest_confusions(pairs: np.ndarray, names: list[str], top: int = 5) -> list[tuple]:
    """The ``top`` largest off-diagonal shares of the confusion ``pairs`` (rows of true,
    predicted, count): ``(true name, predicted name, share of the true class, count, class
    size)``, largest first (ties: by true, then predicted class)."""
    sizes = np.bincount(pairs[:, 0], weights=pairs[:, 2], minlength=len(names))
    wrong = pairs[pairs[:, 0] != pairs[:, 1]]
    shares = wrong[:, 2] / sizes[wrong[:, 0]]
    order = np.argsort(-shares, kind="stable")[:top]
    return [(names[t], names[p], float(shares[i]), int(c), int(sizes[t]))
            for i, (t, p, c) in zip(order, wrong[order], strict=True)]


def per_class_recall(pairs: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class accuracy (recall) from confusion pairs; NaN for classes not in the test."""
    sizes = np.bincount(pairs[:, 0], weights=pairs[:, 2], minlength=n_classes)
    right = pairs[pairs[:, 0] == pairs[:, 1]]
    hits = np.bincount(right[:, 0], weights=right[:, 2], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, hits / sizes, np.nan)


def per_class(report):
    """Per-class accuracy of the linear probe and of the best kNN setting, sorted by how much
    the kNN probe loses (the classes whose local structure is mixed come first)."""
    _need(report, "confusion_linear", "confusion_knn")
    plt = pyplot()
    names = _names(report)
    linear = 100 * per_class_recall(report.arrays["confusion_linear"], len(names))
    knn = 100 * per_class_recall(report.arrays["confusion_knn"], len(names))
    keep = np.flatnonzero(np.isfinite(linear) | np.isfinite(knn))
    order = keep[np.argsort(np.nan_to_num(knn[keep] - linear[keep]), kind="stable")]
    height = float(np.clip(1.5 + 0.22 * len(order), 3.5, 14.0))
    fig, ax = plt.subplots(figsize=(7.5, height))
    positions = np.arange(len(order))
    ax.hlines(positions, np.fmin(linear[order], knn[order]), np.fmax(linear[order], knn[order]),
              color="#BBBBBB", linewidth=1.5)
    ax.scatter(linear[order], positions, color=OKABE_ITO[7], marker="D", s=22,
               label="linear probe", zorder=3, clip_on=False)
    best = report.knn["best"]
    ax.scatter(knn[order], positions, facecolors="none", edgecolors=OKABE_ITO[5], s=48,
               linewidths=1.5, zorder=4, clip_on=False,
               label=f"kNN ({best['vote']}, k={best['k']})")
    ax.set_yticks(positions)
    ax.set_yticklabels([names[i] for i in order], fontsize=9 if len(order) <= 25 else 7)
    ax.set_ylim(len(order) - 0.4, -0.6)  # first row on top, half a row of room around
    ax.set_xlabel("per-class accuracy (recall, %)")
    ax.set_ylabel("class (largest kNN loss first)")
    ax.set_xlim(*recall_range(np.concatenate([linear[order], knn[order]])))
    ax.set_title("Per-class accuracy: linear vs kNN", pad=24)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2,
              frameon=False)
    fig.tight_layout()
    return fig


def recall_range(values: np.ndarray) -> tuple[float, float]:
    """x-axis limits (%) that fit the finite ``values``: a margin of a tenth of their range (at
    least 2 points) on each side, clipped to [0, 100]."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 0.0, 100.0
    low, high = float(values.min()), float(values.max())
    margin = max(2.0, 0.1 * (high - low))
    return max(0.0, low - margin), min(100.0, high + margin)


def similarity(report):
    """Histograms of the cosine similarity of same-class and different-class pairs (sampled),
    with their means and the gap between them marked."""
    _need(report, "similarity_edges", "similarity_same", "similarity_different")
    plt = pyplot()
    edges = report.arrays["similarity_edges"]
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    means = {}
    for key, label, colour in (("similarity_same", "same class", OKABE_ITO[2]),
                               ("similarity_different", "different classes", OKABE_ITO[6])):
        counts = report.arrays[key].astype(np.float64)
        density = counts / max(counts.sum(), 1) / np.diff(edges)
        ax.stairs(density, edges, fill=True, alpha=0.35, color=colour, label=label)
        ax.stairs(density, edges, color=colour, linewidth=1.2)
        means[key] = float((centres * counts).sum() / max(counts.sum(), 1))
        ax.axvline(means[key], color=colour, linestyle="--", linewidth=1)
    top = ax.get_ylim()[1]
    ax.set_ylim(0, 1.3 * top)
    ax.annotate("", xy=(means["similarity_same"], 1.1 * top),
                xytext=(means["similarity_different"], 1.1 * top),
                arrowprops={"arrowstyle": "<|-|>", "color": "#333333", "shrinkA": 0,
                            "shrinkB": 0, "mutation_scale": 8})
    gap = means["similarity_same"] - means["similarity_different"]
    ax.text((means["similarity_same"] + means["similarity_different"]) / 2, 1.15 * top,
            f"gap between the means {gap:.3f}", ha="center", va="bottom", fontsize=9,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none"})
    ax.set_xlabel("cosine similarity of a pair")
    ax.set_ylabel("density")
    occupied = np.flatnonzero(report.arrays["similarity_same"]
                              + report.arrays["similarity_different"])
    low, high = edges[occupied[0]], edges[occupied[-1] + 1]
    margin = 0.05 * (high - low) + 0.02
    ax.set_xlim(max(-1.0, low - margin), min(1.0, high + margin))
    ax.set_title("Similarity of same-class and different-class pairs")
    ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig


def spectrum(report):
    """Singular values of the centred training embeddings (log scale) against their rank,
    with the PCA dimensions for 90 % and 99 % of the variance and RankMe."""
    _need(report, "singular_values")
    plt = pyplot()
    values = report.arrays["singular_values"]
    values = values[values > values.max(initial=0) * 1e-12]
    ranks = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.plot(ranks, values, color=OKABE_ITO[4])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))  # 1, 10, 100 rather than 1.0
    ax.xaxis.set_minor_formatter(NullFormatter())
    if values.max() / values.min() >= 10:  # a log scale only where it spans a decade
        ax.set_yscale("log")
    geometry = report.geometry
    for key, label, colour in (("effective_rank_90", "90 % variance", OKABE_ITO[0]),
                               ("effective_rank_99", "99 % variance", OKABE_ITO[5])):
        if key in geometry:
            ax.axvline(geometry[key], color=colour, linestyle="--",
                       label=f"{label}: {int(geometry[key])} dims")
    if "rankme_centered" in geometry:
        ax.plot([], [], " ", label=f"RankMe (centred) {geometry['rankme_centered']:.1f}")
    ax.set_xlabel("rank")
    ax.set_ylabel("singular value")
    ax.set_title("Singular value spectrum of the centred embeddings")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def k_occurrence(report):
    """Histogram of the k-occurrence N_k (how often a row is among others' 10 nearest
    neighbours): a long right tail means hubs, a tall bar at 0 means anti-hubs."""
    _need(report, "k_occurrence")
    plt = pyplot()
    counts = report.arrays["k_occurrence"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.hist(counts, bins=np.arange(counts.max() + 2) - 0.5, color=OKABE_ITO[1],
            edgecolor="white", linewidth=0.5)
    geometry = report.geometry
    mean = float(counts.mean())  # = k on a leave-one-out graph
    ax.axvline(mean, color=OKABE_ITO[7], linestyle="--",
               label=f"mean N_k = {mean:g} (every row, without hubness)")
    if "hubness_skewness" in geometry:
        ax.plot([], [], " ", label=f"skewness {geometry['hubness_skewness']:.2f}, "
                f"anti-hubs {100 * geometry['antihub_rate']:.1f}%")
    ax.set_xlabel("k-occurrence N_k (times a row is a neighbour)")
    ax.set_ylabel("rows")
    ax.set_title("Hubness: distribution of k-occurrences")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def write_figures(report, directory, *, fmt: str = "png", dpi: int = 150) -> list[Path]:
    """Write every figure the report holds data for into ``directory`` as ``<name>.<fmt>``
    (png, svg or pdf; deterministic bytes for a given report). Returns the paths written."""
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"figure format must be png, svg or pdf, got {fmt}")
    plt = pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    makers = {"projection": projection, "knn_curve": knn_curve, "confusion": confusion,
              "per_class": per_class, "similarity": similarity, "spectrum": spectrum,
              "k_occurrence": k_occurrence}
    written = []
    for name in FIGURES:
        if not has_data(report, name):
            continue  # e.g. no map was made, or no geometry
        with figure_style():
            fig = makers[name](report)
            path = directory / f"{name}.{fmt}"
            _save(fig, path, fmt, dpi)
        plt.close(fig)
        written.append(path)
    return written


_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
             "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}

NEEDS = {"projection": ("projection_xy",), "knn_curve": (),
         "confusion": ("confusion_linear", "confusion_knn"),
         "per_class": ("confusion_linear", "confusion_knn"),
         "similarity": ("similarity_edges",), "spectrum": ("singular_values",),
         "k_occurrence": ("k_occurrence",)}


def has_data(report, name: str) -> bool:
    """Whether the report holds what figure ``name`` needs (a spectrum needs some variance:
    rows that are all identical have none to draw)."""
    if not all(key in report.arrays for key in NEEDS[name]):
        return False
    if name == "spectrum":
        return bool((report.arrays["singular_values"] > 0).any())
    return True


def figure_style():
    """Settings every figure is saved under: SVG ids salted with a constant, so the files are
    byte-identical from run to run."""
    import matplotlib

    return matplotlib.rc_context({"svg.hashsalt": "probekit"})
