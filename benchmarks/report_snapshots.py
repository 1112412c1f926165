"""Snapshots of a fixed set of reports, to prove that a change of structure changed no number.

    python benchmarks/report_snapshots.py save  snapshots/      # before the change
    python benchmarks/report_snapshots.py check snapshots/      # after it: every report equal?

Each run writes its report's JSON without ``timings`` (and without ``probekit_version``) and
the SHA-256 of its figure data; ``check`` compares them byte for byte and prints the first
difference of each run that differs. The runs cover every route: a stratified holdout, k-fold,
leave-one-out, a given split, multi-label tags, a layer stack and a comparison of two spaces,
with geometry and saved predictions. Floats depend on the BLAS and numpy builds, so compare
snapshots made on one machine with one set of library versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import make_embeddings  # noqa: E402


def _runs() -> dict:
    import probekit
    from probekit.compare import compare_reports

    X, y = make_embeddings(1500, 48, 6, separation=0.6, seed=3)
    Xt, yt = make_embeddings(400, 48, 6, separation=0.6, seed=4)
    names = np.array(["ant", "bee", "cat", "dog", "eel", "fox"])[y]
    tags = np.stack([y % 2 == 0, y % 3 == 0, y >= 3, (y == 1) | (y == 4)], axis=1)
    options = {"k": (1, 5, 20), "n_bootstrap": 200, "save_predictions": True}
    runs = {
        "holdout": lambda: probekit.dual_probe(X, names, **options),
        "kfold": lambda: probekit.dual_probe(X, y, folds=3, **options),
        "loo": lambda: probekit.dual_probe(X, y, loo=True, **options),
        "given": lambda: probekit.dual_probe(X, y, X_test=Xt, y_test=yt, **options),
        "euclidean": lambda: probekit.dual_probe(X, y, metric="euclidean", **options),
        "multilabel": lambda: probekit.dual_probe(X, tags, k=(1, 5, 20), n_bootstrap=200),
    }
    out = {name: run() for name, run in runs.items()}
    stack = np.stack([X, X * 0.5 + np.roll(X, 1, axis=1)])
    layers = probekit.dual_probe_layers(stack, y, k=(1, 5), n_bootstrap=200)
    out["layers"] = layers
    frame = compare_reports(out["given"], probekit.dual_probe(
        X * -1.0 + 0.2, y, X_test=Xt * -1.0 + 0.2, y_test=yt, **options))
    out["compare"] = frame
    return out


def _snapshot(result) -> dict:
    """What must not change: the report without timings, and its arrays' digest."""
    from probekit.report import arrays_digest

    if hasattr(result, "to_csv"):  # the comparison frame
        return {"csv": result.to_csv(index=False)}
    if hasattr(result, "reports"):  # layers
        return {"layers": [_snapshot(report) for report in result.reports]}
    data = result.to_dict()
    data.pop("timings", None)
    data.pop("probekit_version", None)
    return {"json": json.dumps(data, indent=1),  # key order too: the JSON byte for byte
            "arrays": arrays_digest(result.arrays) if result.arrays else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "check"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    snapshots = {name: _snapshot(result) for name, result in _runs().items()}
    if args.action == "save":
        args.folder.mkdir(parents=True, exist_ok=True)
        for name, snapshot in snapshots.items():
            (args.folder / f"{name}.json").write_text(json.dumps(snapshot, indent=1) + "\n")
        print(f"{len(snapshots)} snapshots saved in {args.folder}")
        return 0
    differ = 0
    for name, snapshot in snapshots.items():
        saved = json.loads((args.folder / f"{name}.json").read_text())
        if saved == snapshot:
            print(f"{name}: identical")
            continue
        differ += 1
        old, new = json.dumps(saved, indent=1).splitlines(), json.dumps(snapshot,
                                                                        indent=1).splitlines()
        first = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
                     min(len(old), len(new)))
        print(f"{name}: DIFFERS at line {first}:\n  saved: {old[first:first + 1]}\n"
              f"  now:   {new[first:first + 1]}")
    print(f"{len(snapshots) - differ} of {len(snapshots)} identical")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
