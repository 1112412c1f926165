"""Manifests (``path,label`` CSV files) for the audio benchmarks people evaluate on, built from
each data set's own metadata files, with its official splits.

- **ESC-50** (Piczak, ACM MM 2015): ``meta/esc50.csv`` (``filename, fold, target, category,
  ...``) and ``audio/*.wav``; five official folds -> ``fold{k}_train.csv`` / ``fold{k}_test.csv``
  (train on the other four folds, test on fold k; report the mean over k).
- **Speech Commands v2** (Warden, arXiv 1804.03209): ``<word>/<file>.wav`` with the official
  ``validation_list.txt`` and ``testing_list.txt``; the rest is train (``_background_noise_``
  excluded) -> ``train.csv`` / ``val.csv`` / ``test.csv``.
- **FSD50K** (Fonseca et al., IEEE/ACM TASLP 2022), multi-label:
  ``FSD50K.ground_truth/dev.csv`` (``fname, labels, mids, split``) and ``eval.csv``, audio in
  ``FSD50K.dev_audio`` / ``FSD50K.eval_audio`` -> ``train.csv`` / ``val.csv`` / ``test.csv``
  with the tags separated by ``;``.

Paths in the manifests are absolute, so the manifests can live anywhere. Every builder checks
that the audio files it lists exist and says how many rows each manifest got.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from tuner.audio import csv_error_reason

BUILDERS = ("esc50", "speech-commands", "fsd50k")


def write_manifest(path: Path, rows: Iterable[tuple[Path, str]]) -> int:
    """``path,label`` rows to ``path`` (atomically, with :func:`probekit.files.write_atomically`;
    missing folders are made); returns the row count."""
    from probekit.files import write_atomically

    rows = list(rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows((str(audio), label) for audio, label in rows)
    write_atomically(path, text.getvalue())
    return len(rows)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"metadata file not found: {path}")
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        try:
            rows = list(reader)
        except csv.Error as error:  # e.g. a cell over the csv module's field limit
            raise ValueError(f"{path.name} line {reader.reader.line_num}: cannot be read as "
                             f"CSV: {csv_error_reason(error)}") from None
    missing = [name for name in required if not rows or name not in rows[0]]
    if missing:
        raise ValueError(f"{path.name} lacks column(s) {', '.join(missing)}")
    return rows


def _check_exist(paths: list[Path], what: str) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        shown = ", ".join(path.name for path in missing[:3])
        raise ValueError(f"{len(missing)} {what} audio file(s) are missing, e.g. {shown}")


def esc50(root: str | Path, out_dir: str | Path) -> dict[str, int]:
    """ESC-50's five official folds: ``fold{k}_train.csv`` and ``fold{k}_test.csv``."""
    root, out_dir = Path(root).resolve(), Path(out_dir)
    rows = _read_csv(root / "meta" / "esc50.csv", ("filename", "fold", "category"))
    items = [(root / "audio" / row["filename"], row["category"], int(row["fold"]))
             for row in rows]
    _check_exist([path for path, _, _ in items], "ESC-50")
    counts = {}
    for fold in sorted({fold for _, _, fold in items}):
        counts[f"fold{fold}_train.csv"] = write_manifest(
            out_dir / f"fold{fold}_train.csv",
            [(path, label) for path, label, other in items if other != fold])
        counts[f"fold{fold}_test.csv"] = write_manifest(
            out_dir / f"fold{fold}_test.csv",
            [(path, label) for path, label, other in items if other == fold])
    return counts


def speech_commands(root: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Speech Commands v2 with its official validation and test lists."""
    root, out_dir = Path(root).resolve(), Path(out_dir)
    lists = {}
    for split, name in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        path = root / name
        if not path.is_file():
            raise ValueError(f"metadata file not found: {path}")
        lists[split] = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    words = sorted(folder.name for folder in root.iterdir()
                   if folder.is_dir() and not folder.name.startswith("_"))
    if not words:
        raise ValueError(f"no word folders in {root}")
    splits: dict[str, list[tuple[Path, str]]] = {"train": [], "val": [], "test": []}
    for word in words:
        for audio in sorted((root / word).glob("*.wav")):
            relative = f"{word}/{audio.name}"
            split = ("val" if relative in lists["val"] else
                     "test" if relative in lists["test"] else "train")
            splits[split].append((audio, word))
    listed = {name for names in lists.values() for name in names}
    _check_exist([root / name for name in sorted(listed)], "listed Speech Commands")
    return {f"{split}.csv": write_manifest(out_dir / f"{split}.csv", rows)
            for split, rows in splits.items()}


def fsd50k(root: str | Path, out_dir: str | Path) -> dict[str, int]:
    """FSD50K's official splits (dev -> train/val by its ``split`` column, eval -> test), tags
    joined with ``;``."""
    root, out_dir = Path(root).resolve(), Path(out_dir)
    truth = root / "FSD50K.ground_truth"
    dev = _read_csv(truth / "dev.csv", ("fname", "labels", "split"))
    evaluation = _read_csv(truth / "eval.csv", ("fname", "labels"))

    def item(row, folder):
        tags = ";".join(tag.strip() for tag in row["labels"].split(",") if tag.strip())
        return root / folder / f"{row['fname']}.wav", tags

    splits = {"train": [item(r, "FSD50K.dev_audio") for r in dev if r["split"] == "train"],
              "val": [item(r, "FSD50K.dev_audio") for r in dev if r["split"] == "val"],
              "test": [item(r, "FSD50K.eval_audio") for r in evaluation]}
    _check_exist([path for rows in splits.values() for path, _ in rows], "FSD50K")
    return {f"{split}.csv": write_manifest(out_dir / f"{split}.csv", rows)
            for split, rows in splits.items()}


def build(name: str, root: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Dispatch by data set name (one of :data:`BUILDERS`)."""
    builders = {"esc50": esc50, "speech-commands": speech_commands, "fsd50k": fsd50k}
    if name not in builders:
        raise ValueError(f"data set must be one of {', '.join(BUILDERS)}, got {name}")
    return builders[name](root, out_dir)
