"""probekit's dual probe against the naive scikit-learn way, in one run.

The naive way is what people write by hand to get the same numbers: one
``KNeighborsClassifier(metric="cosine", algorithm="brute")`` fitted and scored per k and per vote
(majority, and the exp(sim / T) weighted vote as a callable weight), and one
``StandardScaler + LogisticRegression`` per C on the same validation split, then a refit.

Run:  python benchmarks/bench_dual_probe.py            (50k x 768, 50 classes: minutes)
      python benchmarks/bench_dual_probe.py --n 5000   (a quick look)

Prints both timings, their ratio, the kNN time against the bare float32 matmul of the same
shapes, and the largest accuracy differences.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import probekit  # noqa: E402
from _data import make_embeddings  # noqa: E402
from probekit.probes.linear import DEFAULT_C_GRID  # noqa: E402
from probekit.splits import stratified_holdout  # noqa: E402


def naive_sklearn(X, y, train, test, ks, temperature, grid, val_size, seed, max_iter):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, x_test, y_test = X[train], y[train], X[test], y[test]
    knn = {}
    for vote in ("majority", "weighted"):
        for k in ks:
            weights = "uniform" if vote == "majority" else (
                lambda d: np.exp((1.0 - d) / temperature))
            model = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                         weights=weights)
            knn[(vote, k)] = model.fit(x_train, y_train).score(x_test, y_test)
    fit, val = stratified_holdout(y_train, test_size=val_size, seed=seed)
    scaler = StandardScaler().fit(x_train[fit])
    val_scores = []
    for c in grid:
        model = LogisticRegression(C=c, max_iter=max_iter)
        model.fit(scaler.transform(x_train[fit]), y_train[fit])
        val_scores.append(model.score(scaler.transform(x_train[val]), y_train[val]))
    best_c = grid[int(np.argmax(val_scores))]
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=best_c, max_iter=max_iter).fit(scaler.transform(x_train), y_train)
    return knn, model.score(scaler.transform(x_test), y_test), best_c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--separation", type=float, default=0.5)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X, y = make_embeddings(args.n, args.dim, args.classes, separation=args.separation,
                           seed=args.seed)
    print(f"data: {args.n} x {args.dim} float32, {args.classes} classes; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")

    tick = time.perf_counter()
    report = probekit.dual_probe(X, y, seed=args.seed, max_iter=args.max_iter)
    ours = time.perf_counter() - tick
    ks = report.protocol["k"]

    train, test = stratified_holdout(y, test_size=0.2, seed=args.seed)
    queries = X[test] / np.linalg.norm(X[test], axis=1, keepdims=True)
    database = X[train] / np.linalg.norm(X[train], axis=1, keepdims=True)
    tick = time.perf_counter()
    _ = queries @ database.T
    matmul = time.perf_counter() - tick

    tick = time.perf_counter()
    knn, linear, best_c = naive_sklearn(X, y, train, test, ks, report.protocol["temperature"],
                                        list(DEFAULT_C_GRID), report.protocol["val_size"],
                                        args.seed, args.max_iter)
    naive = time.perf_counter() - tick

    knn_diff = max(abs(report.knn[vote][str(k)]["accuracy"] - knn[(vote, k)])
                   for vote, k in knn)
    linear_diff = abs(report.linear["accuracy"] - linear)
    print(f"probekit dual_probe : {ours:8.2f} s  (kNN {report.timings['knn_s']:.2f} s, "
          f"linear {report.timings['linear_s']:.2f} s, geometry "
          f"{report.timings['geometry_s']:.2f} s, backend {report.knn['backend']})")
    print(f"naive scikit-learn  : {naive:8.2f} s  ({len(knn)} KNeighborsClassifier fits, "
          f"{len(DEFAULT_C_GRID) + 1} LogisticRegression fits)")
    probes_only = ours - report.timings["geometry_s"]
    print(f"speed-up            : {naive / ours:8.1f} x   (bar: >= 10 x; probekit also "
          "computed the geometry diagnostics)")
    print(f"speed-up, probes    : {naive / probes_only:8.1f} x   (the same work as the naive way)")
    print(f"geometry / kNN probe: {report.timings['geometry_s'] / report.timings['knn_s']:8.2f}"
          "     (bar: <= 1, the default diagnostics on top of the probe)")
    print(f"kNN / float32 matmul: {report.timings['knn_s'] / matmul:8.2f}     "
          f"(matmul {matmul:.2f} s; bar: <= 1.5)")
    print(f"largest |accuracy difference|: kNN {100 * knn_diff:.2f} points "
          f"(majority ties are broken differently), linear {100 * linear_diff:.2f} points "
          f"(C ours {report.linear['C']:g}, scikit-learn {best_c:g})")
    print(f"accuracy: linear {report.linear['accuracy']:.4f}, best kNN "
          f"{report.knn['best']['accuracy']:.4f} ({report.knn['best']['vote']}, "
          f"k={report.knn['best']['k']})")


if __name__ == "__main__":
    main()
