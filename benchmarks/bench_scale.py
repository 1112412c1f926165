"""probekit evaluate at scale: memory-mapped inputs, exact vs approximate search, time and peak
memory per stage.

Each configuration runs the real ``probekit evaluate`` command in a fresh child process on a
memory-mapped ``.npy`` (written once, chunk by chunk, by ``_data.write_embeddings``); a thread
in the child samples its resident memory (``VmRSS``) every 10 ms and charges it to the stage
running at that moment (load and checks, kNN search, geometry, linear probe, bootstrap and the
rest, writing the outputs and figures), and the kernel's high-water mark (``VmHWM``) gives the
true peak. Times per stage are the report's own. The approximate runs print their measured
recall@20 and the accuracy change on the sampled queries; with ``--compare-exact`` the exact
run's accuracies are printed beside them.

Run:  python benchmarks/bench_scale.py --rows 100000                      (about a minute)
      python benchmarks/bench_scale.py --rows 1000000 --search ivf        (minutes)
      python benchmarks/bench_scale.py --rows 1000000 --search exact ivf  (the exact run: long)

The data: ``--rows`` x 256 float32, 100 balanced-at-random classes whose structure lies in a
16-dimensional subspace plus noise in all 256 (TwoNN intrinsic dimension about 24, kNN about
73 %, linear about 71 %); ``--latent 64 --separation 0.5`` makes a harder set for the
approximate search (intrinsic dimension about 45).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("load and checks", "kNN search", "geometry", "linear probe", "bootstrap and rest",
          "outputs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--separation", type=float, default=1.0)
    parser.add_argument("--search", nargs="+", default=["exact", "ivf"])
    parser.add_argument("--linear-backend", nargs="+", default=["numpy"])
    parser.add_argument("--extra-args", default="",
                        help="More options for probekit evaluate, as one string.")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(json.loads(args.child))
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, python "
          f"{platform.python_version()}")
    rows = []
    for n in args.rows:
        x_path, y_path = make_data(args, n)
        size = x_path.stat().st_size
        print(f"data: {n:,} x {args.dim} float32 ({size / 2**30:.2f} GiB memory-mapped), "
              f"{args.classes} classes, latent {args.latent}, separation {args.separation}",
              flush=True)
        for search in args.search:
            for backend in args.linear_backend:
                result = run_config(x_path, y_path, search, backend, args.extra_args)
                result.update(rows=n, search=search, linear_backend=backend, input_bytes=size)
                rows.append(result)
                print(line(result), flush=True)
    print()
    print(table(rows))


def make_data(args, n: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(HERE))
    from _data import write_embeddings

    stem = f"probekit_scale_{n}_{args.dim}_{args.classes}_{args.latent}_{args.separation}"
    x_path, y_path = args.data_dir / f"{stem}_X.npy", args.data_dir / f"{stem}_y.npy"
    if not (x_path.exists() and y_path.exists()):
        write_embeddings(x_path, y_path, n, args.dim, args.classes, latent=args.latent,
                         separation=args.separation)
    return x_path, y_path


def run_config(x_path: Path, y_path: Path, search: str, backend: str, extra: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        options = ["--search", search, *extra.split()]
        if backend != "numpy":
            options += ["--linear-backend", backend]
        command = [sys.executable, __file__, "--child",
                   json.dumps([str(x_path), str(y_path), str(out), *options])]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        report = json.loads(out.read_text())
    knn = report["knn"]
    result = {"wall_s": wall, **measured, "timings": report["timings"],
              "knn_accuracy": knn["weighted"]["20"]["accuracy"],
              "linear_accuracy": report["linear"]["accuracy"],
              "linear_C": report["linear"]["C"]}
    if "approximation" in knn:
        check = knn["approximation"]
        result.update(recall20=check["recall"]["20"], method=check["method"],
                      sample_difference=check["accuracy"]["approximate"]
                      - check["accuracy"]["exact"])
    return result


def run_child(argv: list[str]) -> None:
    """``probekit evaluate X y --out OUT [options]`` in this process, its memory sampled."""
    x_path, y_path, out, *options = argv
    import probekit.cli as cli_module
    import probekit.dual.classes as classes

    stage = {"name": STAGES[0]}
    peaks = dict.fromkeys(STAGES, 0)

    def charged(name, function):
        def wrapper(*args, **kwargs):
            before, stage["name"] = stage["name"], name
            try:
                return function(*args, **kwargs)
            finally:
                stage["name"] = "bootstrap and rest" if name != "outputs" else before
        return wrapper

    classes._knn_runs = charged("kNN search", classes._knn_runs)
    classes.describe = charged("geometry", classes.describe)
    classes.linear_predict = charged("linear probe", classes.linear_predict)
    cli_module._write_outputs = charged("outputs", cli_module._write_outputs)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = resident_bytes("VmRSS")
            peaks[stage["name"]] = max(peaks[stage["name"]], rss)
            time.sleep(0.01)

    baseline = resident_bytes("VmRSS")
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cli_module.cli.main(["evaluate", x_path, y_path, "--out", out, "-q", *options],
                            standalone_mode=False)
    finally:
        stop.set()
        sampler.join()
    sys.stdout.flush()
    print(json.dumps({"peak_rss": resident_bytes("VmHWM"), "baseline_rss": baseline,
                      "stage_peak_rss": peaks}))


def resident_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for entry in status:
            if entry.startswith(field + ":"):
                return int(entry.split()[1]) * 1024
    return 0


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def line(result: dict) -> str:
    t = result["timings"]
    text = (f"{result['rows']:>9,} {result['search']:>5} linear={result['linear_backend']:<5} "
            f"total {result['wall_s']:7.1f} s (kNN {t['knn_s']:.1f}, geometry "
            f"{t['geometry_s']:.1f}, linear {t['linear_s']:.1f}) peak RSS "
            f"{gib(result['peak_rss'])} GiB (input {gib(result['input_bytes'])}); kNN@20 "
            f"{100 * result['knn_accuracy']:.2f} %, linear {100 * result['linear_accuracy']:.2f} %")
    if "recall20" in result:
        text += (f"; recall@20 {result['recall20']:.3f}, sample accuracy change "
                 f"{100 * result['sample_difference']:+.2f} points")
    return text


def table(rows: list[dict]) -> str:
    head = ("| rows | search | linear | total s | kNN s | geometry s | linear s | peak RSS GiB "
            "(input) | peak over input, by stage GiB | kNN@20 % | linear % | recall@20 |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        t = r["timings"]
        over = {name: r["stage_peak_rss"][name] - r["input_bytes"] for name in STAGES
                if r["stage_peak_rss"][name]}
        by_stage = ", ".join(f"{name.split()[0]} {gib(value)}" for name, value in over.items())
        lines.append(
            f"| {r['rows']:,} | {r['search']} | {r['linear_backend']} | {r['wall_s']:.1f} | "
            f"{t['knn_s']:.1f} | {t['geometry_s']:.1f} | {t['linear_s']:.1f} | "
            f"{gib(r['peak_rss'])} ({gib(r['input_bytes'])}) | {by_stage} | "
            f"{100 * r['knn_accuracy']:.2f} | {100 * r['linear_accuracy']:.2f} | "
            f"{r.get('recall20', 1.0):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
