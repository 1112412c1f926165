"""Figures of a dual-probe report, and the 2-D projection they show.

Every figure function takes a :class:`~probekit.report.Report` (with its ``arrays``, i.e. made
by ``dual_probe`` or loaded with :meth:`Report.load`) and returns a matplotlib ``Figure`` to
restyle or save. :func:`write_figures` writes them all. matplotlib is imported here only (the
CLI runs it headless on Agg); umap-learn only inside :func:`project_2d`.

Colours: the Okabe–Ito palette (colour-blind safe) for lines and up to 8 classes, the
perceptually uniform ``cividis`` map beyond that and for matrices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
             "#000000")
LEGEND_MAX = 20  # classes named in a legend; above, a colour bar and names at the centroids
PROJECTION_MAX = 20_000  # points drawn; above, a stratified seeded sample
FIGURES = ("projection", "knn_curve", "confusion", "per_class", "similarity", "spectrum",
           "k_occurrence")


def _pyplot():
    """pyplot, with whatever backend is active (the CLI sets MPLBACKEND=Agg; a notebook keeps
    its own; a machine without a display falls back to Agg by itself)."""
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- projection


def project_2d(X: np.ndarray, codes: np.ndarray, is_test: np.ndarray, *, seed: int = 0,
               max_points: int = PROJECTION_MAX) -> tuple[dict, dict]:
    """A 2-D map of the rows: UMAP (cosine, seeded) when umap-learn is installed, else PCA.

    Above ``max_points`` rows a stratified seeded sample is drawn. The trustworthiness of the
    map (scikit-learn, 5 neighbours, on at most 2000 of the drawn points) says how far to trust
    it. Returns ``(arrays, info)``: ``projection_xy``, ``projection_codes``,
    ``projection_is_test``, and ``{"method", "n_points", "n_rows", "trustworthiness",
    "warning"}``.
    """
    from sklearn.manifold import trustworthiness

    rows = _stratified_sample(codes, max_points, seed)
    data = np.asarray(X[rows], dtype=np.float32)
    warning = None
    try:
        import umap  # noqa: F401
    except ImportError:
        umap = None
        warning = ("UMAP needs the umap extra (pip install 'probekit[umap]'); the map is a "
                   "PCA projection")
    if umap is not None and len(rows) > 15:
        from umap import UMAP

        xy = UMAP(n_components=2, metric="cosine", random_state=seed, n_jobs=1,
                  n_neighbors=min(15, len(rows) - 1)).fit_transform(data)
        method = "UMAP (cosine)"
    else:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(data)
        method = "PCA"
    check = _stratified_sample(codes[rows], 2000, seed)
    neighbours = max(1, min(5, len(check) // 2 - 1))
    trust = float(trustworthiness(data[check], xy[check], n_neighbors=neighbours))
    arrays = {"projection_xy": np.asarray(xy, dtype=np.float32),
              "projection_codes": codes[rows], "projection_is_test": is_test[rows]}
    info = {"method": method, "n_points": int(len(rows)), "n_rows": int(len(codes)),
            "trustworthiness": trust, "seed": seed, "warning": warning}
    return arrays, info


def _stratified_sample(codes: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of about ``size`` rows keeping each class's share (all rows when
    there are no more than ``size``)."""
    if len(codes) <= size:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(codes):
        members = np.flatnonzero(codes == c)
        take = max(1, int(round(size * len(members) / len(codes))))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


# ---------------------------------------------------------------------------- helpers


MARKERS = ("o", "s", "^")


def _class_styles(n: int) -> list[tuple]:
    """``(colour, marker)`` per class: the 8 Okabe–Ito colours, then the same colours with a
    square and a triangle (up to :data:`LEGEND_MAX` classes, all colour-blind safe, named in a
    legend), then ``cividis`` (with a colour bar)."""
    plt = _pyplot()
    if n <= LEGEND_MAX:
        return [(OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i // len(OKABE_ITO)]) for i in range(n)]
    cmap = plt.get_cmap("cividis")
    return [(cmap(value), "o") for value in np.linspace(0.0, 1.0, n)]


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
    """Scatter of the 2-D map coloured by class; test points as crosses, training points as
    dots; a legend up to 20 classes, else a colour bar and class names at the centroids."""
    _need(report, "projection_xy", "projection_codes", "projection_is_test")
    plt = _pyplot()
    xy, codes = report.arrays["projection_xy"], report.arrays["projection_codes"]
    is_test = report.arrays["projection_is_test"].astype(bool)
    names = _names(report)
    present = np.unique(codes)
    styles = _class_styles(len(present))
    fig, ax = plt.subplots(figsize=(8.5, 7.0) if len(present) <= LEGEND_MAX else (9.5, 8.0))
    size = float(np.clip(4000.0 / max(len(xy), 1), 2.0, 30.0))
    for (colour, marker), c in zip(styles, present, strict=True):
        mine = codes == c
        ax.scatter(*xy[mine & ~is_test].T, s=size, color=colour, alpha=0.6, linewidths=0,
                   marker=marker, label=names[c])
        ax.scatter(*xy[mine & is_test].T, s=size * 1.6, color=colour, alpha=0.9, marker="x",
                   linewidths=0.8)
    info = report.protocol.get("projection", {})
    ax.set_title(f"{info.get('method', '2-D map')} of the embeddings, coloured by class")
    ax.set_xlabel("map axis 1")
    ax.set_ylabel("map axis 2")
    ax.set_aspect("equal", adjustable="datalim")
    if len(present) <= LEGEND_MAX:
        ax.legend(title="class (dots train, crosses test)", fontsize=8, title_fontsize=8,
                  markerscale=max(1.0, 30.0 / size) ** 0.5, loc="center left",
                  bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        cmap = plt.get_cmap("cividis", len(present))
        mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-0.5, len(present) - 0.5))
        bar = fig.colorbar(mappable, ax=ax, fraction=0.04, pad=0.02)
        bar.set_ticks(np.unique(np.linspace(0, len(present) - 1, 6).round().astype(int)))
        bar.set_label("class index (dots train, crosses test)")
        for c in present:
            centre = np.median(xy[codes == c], axis=0)
            ax.annotate(names[c], centre, xytext=(0, 6), textcoords="offset points",
                        fontsize=6, ha="center", va="bottom", color="#222222")
    sampled = info.get("n_points", len(xy)) < info.get("n_rows", len(xy))
    text = (f"{info.get('n_points', len(xy))} points"
            + (f" (stratified seeded sample of {info.get('n_rows')})" if sampled else "")
            + f"; trustworthiness {info.get('trustworthiness', float('nan')):.3f} "
              "(1 = neighbourhoods kept, 0.5 = random)")
    if info.get("warning"):
        text += f". {info['warning']}"
    fig.tight_layout()
    _caption(fig, text)
    return fig


umap = projection  # the name the issue and the README use: probekit.plots.umap(report)


def knn_curve(report):
    """kNN accuracy against k for both votes with their 95 % bootstrap bands, and the linear
    probe as a horizontal line with its band: the dual probe in one picture."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    metric = report.main_metric
    ks = [int(k) for k in report.knn[report.votes[0]]]
    styles = {"majority": (OKABE_ITO[4], "o"), "weighted": (OKABE_ITO[5], "s")}
    for vote in report.votes:
        colour, marker = styles[vote]
        scores = [report.knn[vote][str(k)] for k in ks]
        accuracy = 100 * np.array([s[metric] for s in scores])
        low = 100 * np.array([s["ci95"][0] for s in scores])
        high = 100 * np.array([s["ci95"][1] for s in scores])
        ax.plot(ks, accuracy, marker=marker, color=colour, label=f"kNN, {vote} vote")
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
    plt = _pyplot()
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
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"layers.{fmt}"
    with figure_style():
        fig = layer_curve(layerwise)
        fig.savefig(path, dpi=dpi, metadata=_METADATA[fmt], bbox_inches="tight")
    plt.close(fig)
    return path


def _better_probe(report) -> tuple[str, str]:
    best, metric = report.knn["best"], report.main_metric
    if report.linear[metric] >= best[metric]:
        return "confusion_linear", f"linear probe (C={report.linear['C']:g})"
    return "confusion_knn", f"kNN, {best['vote']} vote, k={best['k']}"


def confusion(report, probe: str | None = None):
    """Row-normalised confusion matrix of the better probe (or ``probe`` = "linear"/"knn");
    class names on the axes up to 50 classes, the largest confusions listed above that."""
    key, title = _better_probe(report)
    if probe is not None:
        key = {"linear": "confusion_linear", "knn": "confusion_knn"}[probe]
        title = "linear probe" if probe == "linear" else "best kNN setting"
    _need(report, key)
    plt = _pyplot()
    counts = report.arrays[key].astype(np.float64)
    names = _names(report)
    rows = counts.sum(axis=1)
    present = rows > 0
    # every class keeps its row (rows without test samples are grey), so row i is class i
    matrix = np.ma.masked_invalid(np.divide(counts, rows[:, None], out=np.full_like(counts,
                                  np.nan), where=present[:, None]))
    n = len(names)
    longest = max(len(name) for name in names) if n <= 50 else 0
    side = float(np.clip(3.0 + 0.22 * n, 5.0, 14.0)) + 0.07 * longest
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    cmap = plt.get_cmap("cividis").with_extremes(bad="#D9D9D9")
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    if n <= 50:
        size = 9 if n <= 12 else 7 if n <= 25 else 5
        ax.set_xticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=size)
        ax.set_yticks(range(n))
        ax.set_yticklabels(names, fontsize=size)
        if n <= 12:
            for (i, j), value in np.ndenumerate(matrix.filled(np.nan)):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if value < 0.6 else "black")
    ax.set_xlabel("predicted class" + ("" if n <= 50 else " (class index)"))
    ax.set_ylabel("true class (grey: none in the test set)" if not present.all()
                  else "true class")
    ax.set_title(f"Confusion matrix (row-normalised), {title}")
    fig.tight_layout()
    confusions = largest_confusions(counts, names)
    _caption(fig, "Largest confusions: " + ("; ".join(
        f"{a} → {b} {100 * share:.0f}%" for a, b, share in confusions) or "none"))
    return fig


def largest_confusions(counts: np.ndarray, names: list[str], top: int = 5):
    """The ``top`` largest off-diagonal shares ``(true, predicted, share of the true class)``."""
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts, dtype=np.float64),
                       where=rows > 0)
    np.fill_diagonal(shares, 0.0)
    order = np.argsort(-shares, axis=None, kind="stable")[:top]
    return [(names[i], names[j], float(shares[i, j]))
            for i, j in zip(*np.unravel_index(order, shares.shape), strict=True)
            if shares[i, j] > 0]


def per_class_recall(counts: np.ndarray) -> np.ndarray:
    """Per-class accuracy (recall) from a confusion matrix; NaN for classes not in the test."""
    rows = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(counts) / rows, np.nan)


def per_class(report):
    """Per-class accuracy of the linear probe and of the best kNN setting, sorted by how much
    the kNN probe loses (the classes whose local structure is mixed come first)."""
    _need(report, "confusion_linear", "confusion_knn")
    plt = _pyplot()
    names = _names(report)
    linear = 100 * per_class_recall(report.arrays["confusion_linear"])
    knn = 100 * per_class_recall(report.arrays["confusion_knn"])
    keep = np.flatnonzero(np.isfinite(linear) | np.isfinite(knn))
    order = keep[np.argsort(np.nan_to_num(knn[keep] - linear[keep]), kind="stable")]
    height = float(np.clip(1.5 + 0.22 * len(order), 3.5, 14.0))
    fig, ax = plt.subplots(figsize=(7.5, height))
    positions = np.arange(len(order))
    ax.hlines(positions, np.fmin(linear[order], knn[order]), np.fmax(linear[order], knn[order]),
              color="#BBBBBB", linewidth=1.5)
    ax.scatter(linear[order], positions, color=OKABE_ITO[7], marker="D", s=22,
               label="linear probe", zorder=3)
    best = report.knn["best"]
    ax.scatter(knn[order], positions, color=OKABE_ITO[5], s=26, zorder=3,
               label=f"kNN ({best['vote']}, k={best['k']})")
    ax.set_yticks(positions)
    ax.set_yticklabels([names[i] for i in order], fontsize=9 if len(order) <= 25 else 6)
    ax.invert_yaxis()
    ax.set_xlabel("per-class accuracy (recall, %)")
    ax.set_ylabel("class (largest kNN loss first)")
    ax.set_xlim(-2, 102)
    ax.set_title("Per-class accuracy: linear vs kNN")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def similarity(report):
    """Histograms of the cosine similarity of same-class and different-class pairs (sampled),
    with their means and the gap between them marked."""
    _need(report, "similarity_edges", "similarity_same", "similarity_different")
    plt = _pyplot()
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
    plt = _pyplot()
    values = report.arrays["singular_values"]
    values = values[values > values.max(initial=0) * 1e-12]
    ranks = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.plot(ranks, values, color=OKABE_ITO[4])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
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
    plt = _pyplot()
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
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    makers = {"projection": projection, "knn_curve": knn_curve, "confusion": confusion,
              "per_class": per_class, "similarity": similarity, "spectrum": spectrum,
              "k_occurrence": k_occurrence}
    metadata = _METADATA[fmt]
    written = []
    for name in FIGURES:
        if not has_data(report, name):
            continue  # e.g. no map was made, or no geometry
        with figure_style():
            fig = makers[name](report)
            path = directory / f"{name}.{fmt}"
            fig.savefig(path, dpi=dpi, metadata=metadata, bbox_inches="tight")
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
    """Whether the report holds what figure ``name`` needs."""
    return all(key in report.arrays for key in NEEDS[name])


def figure_style():
    """Settings every figure is saved under: SVG ids salted with a constant, so the files are
    byte-identical from run to run."""
    import matplotlib

    return matplotlib.rc_context({"svg.hashsalt": "probekit"})
