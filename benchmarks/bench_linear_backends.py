"""The linear probe's backends and placements: time per objective evaluation, one fit, and peak
memory, each configuration in a fresh process.

Run:  python benchmarks/bench_linear_backends.py                 (100k training rows x 256,
                                                                 100 classes; 25k test rows)
      python benchmarks/bench_linear_backends.py --n 20000 --dim 128
      python benchmarks/bench_linear_backends.py --torch-threads 1   (torch's intra-op threads)

The data are a float32 memory map on disk (what ``probekit evaluate`` reads); the training rows
are taken through an index (as a split does). For every backend (numpy, torch; torch runs on
CUDA where there is one) and placement (``copy``: the standardised copy fits the memory budget;
``stream``: budget 0, every evaluation standardises its blocks again from the memory map) it
prints the mean time of one loss-and-gradient evaluation, the wall time of
``linear_predict`` at one C (the refit alone: standardisation, placement, L-BFGS, scoring) with
its iterations, and the process's peak RSS above what it held before the fit (the memory map's
pages count where they are read), and of it the heap (anonymous memory, sampled every 2 ms:
the copy, the blocks and their temporaries).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def make_data(path: str, n: int, dim: int, n_classes: int) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    centres = rng.normal(size=(n_classes, dim)) * 0.25
    X = np.lib.format.open_memmap(os.path.join(path, "X.npy"), mode="w+", dtype=np.float32,
                                  shape=(n, dim))
    for start in range(0, n, 10_000):
        stop = min(n, start + 10_000)
        X[start:stop] = centres[y[start:stop]] + rng.normal(size=(stop - start, dim)) + 3.0
    X.flush()
    np.save(os.path.join(path, "y.npy"), y)


def anonymous_rss_mb() -> float:
    """The process's resident anonymous memory (its heap: not the memory map's file pages)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def sampled_peak(stop: threading.Event, out: list) -> None:
    """Sample :func:`anonymous_rss_mb` every 2 ms until ``stop``; its peak into ``out``."""
    peak = 0.0
    while not stop.wait(0.002):
        peak = max(peak, anonymous_rss_mb())
    out.append(peak)


def run_one(path: str, backend: str, budget: int, evaluations: int, threads: int) -> dict:
    from probekit.probes.linear import linear_predict
    from probekit.probes.logistic import objective_sums, resolve_linear_backend
    from probekit.probes.standard import fit_scaling, standard_rows

    X = np.load(os.path.join(path, "X.npy"), mmap_mode="r")
    y = np.load(os.path.join(path, "y.npy"))
    n_classes = int(y.max()) + 1
    n_train = len(y) * 4 // 5
    train_rows = np.arange(n_train)
    test_rows = np.arange(n_train, len(y))
    name, device = resolve_linear_backend(backend)
    if name == "torch":
        import torch  # its import is not the fit's memory

        if threads:
            torch.set_num_threads(threads)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    anonymous = anonymous_rss_mb()
    stop, peaks = threading.Event(), []
    sampler = threading.Thread(target=sampled_peak, args=(stop, peaks))
    sampler.start()
    started = time.perf_counter()
    predicted = linear_predict(X, y[train_rows], X, n_classes=n_classes, C=[1.0],
                               query_codes=y[test_rows], train_rows=train_rows,
                               test_rows=test_rows, linear_backend=backend,
                               memory_budget=budget)
    fit_s = time.perf_counter() - started
    stop.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scaling = fit_scaling(X, train_rows)
    sums, placement = objective_sums(standard_rows(X, train_rows, scaling), y[train_rows],
                                     kind="softmax", outputs=n_classes, backend=name,
                                     device=device, memory_budget=budget)
    coef = np.zeros((X.shape[1], n_classes))
    intercept = np.zeros(n_classes)
    sums(coef, intercept)  # warm-up
    started = time.perf_counter()
    for _ in range(evaluations):
        sums(coef, intercept)
    evaluation_s = (time.perf_counter() - started) / evaluations
    return {"backend": name, "device": device, "rows": placement,
            "evaluation_s": evaluation_s, "fit_s": fit_s, "iterations": predicted.refit_n_iter,
            "accuracy": float(np.mean(predicted.predictions == y[test_rows])),
            "peak_rss_above_start_mb": (peak - before) / 1024,
            "peak_heap_above_start_mb": peaks[0] - anonymous}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--evaluations", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--backends", default="numpy,torch")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        path, backend, budget = args.one.split(",")
        print(json.dumps(run_one(path, backend, int(budget), args.evaluations,
                                 args.torch_threads)))
        return
    with tempfile.TemporaryDirectory() as path:
        make_data(path, args.n + args.n // 4, args.dim, args.classes)
        print(f"{args.n} training rows x {args.dim}, {args.classes} classes "
              f"({args.n * args.dim * 4 / 2**20:.0f} MiB standardised), {args.n // 4} test "
              f"rows; {os.cpu_count()} CPUs, torch threads: {args.torch_threads or 'default'}")
        print("backend device rows    evaluation  fit(C=1)  iterations  accuracy  peak RSS +"
              "  of it heap")
        for backend in args.backends.split(","):
            for budget in (1 << 30, 0):
                out = subprocess.run(
                    [sys.executable, __file__, "--one", f"{path},{backend},{budget}",
                     "--evaluations", str(args.evaluations),
                     "--torch-threads", str(args.torch_threads)],
                    check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"{r['backend']:7s} {r['device']:6s} {r['rows']:7s} "
                      f"{r['evaluation_s']:9.3f} s {r['fit_s']:7.1f} s {r['iterations']:10d}"
                      f"  {r['accuracy']:.4f}  {r['peak_rss_above_start_mb']:6.0f} MiB"
                      f"  {r['peak_heap_above_start_mb']:6.0f} MiB")


if __name__ == "__main__":
    main()
