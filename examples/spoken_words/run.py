"""The paper's two-stage framework on real speech: tune the representation, then probe it.

From the GE2E speech encoder of the Resemblyzer wheel (trained on real speech), on spoken words
synthesised by ``make_dataset.py`` with a voice-disjoint split, four conditions with the same
data, order, budget and seeds:

1. ``frozen``: the pretrained encoder as it is;
2. ``adapter``: frozen encoder + a residual adapter tuned with SupCon on its embeddings;
3. ``ce``: vanilla fine-tuning with cross-entropy (a linear classifier on the embedding);
4. ``supcon``: contrastive fine-tuning with SupCon (projection-free: the loss sees the
   embedding, which is what gets probed).

Fine-tuning trains GE2E's top LSTM layer and its output layer; the two lower LSTM layers stay
frozen and their outputs are computed once and cached (``tuner.encoders.split_ge2e``), so a
full run fits on two CPU cores. Every condition is judged by probekit's dual probe on the test
voices (never heard in training): linear probe, kNN over k with CIs, geometry; ``ce`` and
``supcon`` are compared with McNemar's exact test and paired bootstrap CIs.

The comparison runs in one or more *settings* (``--train-voices``): training on the clips of N
training voices (a seeded choice per seed) or of all of them, always tested on the same
held-out voices. Each fine-tuning run gets the same budget of optimizer steps (``--steps``),
so a setting with fewer clips trains for more epochs; the best epoch by validation kNN@20 is
kept.

    python examples/spoken_words/run.py --out results/            # full: 3 seeds, 8 and all voices
    python examples/spoken_words/run.py --out results/ --quick    # a small check (about 1 min)

``--encoder crepe:tiny`` (or ``crepe``, ``hf:DIR``) runs the same comparison with another
pre-trained encoder, fine-tuned on waveforms in its last ``--train-last`` blocks (nothing is
cached, so that is a GPU-sized job for all but CREPE tiny).

A multi-label variant follows (unless ``--no-multilabel``): clips of two or three words of one
voice in a row, labelled with the set of words, frozen vs binary cross-entropy vs Jaccard SupCon
fine-tuning, scored by mAP.

Writes ``results.json`` (every report's summary per setting and seed), ``results.md`` (mean ±
std over seeds, the paired tests) and figures of the first seed: ``knn_curves_<setting>.png``
for every setting and, unless ``--quick``, ``umap_<setting>_<condition>.png`` for the first
setting (``<setting>`` is ``voices8`` or ``all``).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONDITIONS = ("frozen", "adapter", "ce", "supcon")
QUICK_DATA = ["--words", "10", "--variants", "m1,m3,f2,f4,klatt,m5", "--speeds", "140,180",
              "--pitches", "50"]
FULL_DATA = ["--words", "35", "--speeds", "140,180", "--pitches", "50", "--snrs", "20,10,5,0"]
GEOMETRY_KEYS = ("alignment", "uniformity", "nc1", "silhouette", "map_at_r")


def make_data(out: Path, quick: bool, seed: int) -> Path:
    data = out / "data"
    if not (data / "manifest.csv").exists():
        arguments = QUICK_DATA if quick else FULL_DATA
        subprocess.run([sys.executable, str(HERE / "make_dataset.py"), "--out", str(data),
                        "--seed", str(seed), *arguments], check=True)
    return data


def cached_splits(data: Path, front, max_seconds: float, sample_rate: int) -> dict:
    """Each split's items, targets and classes: the front end's output sequences, computed
    once, or, for ``front=None``, the decoded (centre-cropped) waveforms."""
    from tuner.data import AudioDataset
    from tuner.embed import cache_sequences

    splits, classes = {}, None
    for name in ("train", "val", "test"):
        clips = AudioDataset.from_manifest(data / f"{name}.csv", sample_rate=sample_rate,
                                           classes=classes, max_seconds=max_seconds)
        classes = clips.classes
        items = (cache_sequences(front, clips) if front is not None
                 else [clips[index][0] for index in range(len(clips))])
        splits[name] = (items, clips.targets)
    return {"splits": splits, "classes": classes, "front": front, "sample_rate": sample_rate}


def as_dataset(cache: dict, items: list, targets: np.ndarray):
    """Cached front-end sequences or waveforms (``cache["front"]`` None) as a Dataset."""
    from tuner.data import SequenceDataset, WaveformDataset

    if cache["front"] is not None:
        return SequenceDataset(items, targets, cache["classes"])
    return WaveformDataset(items, targets, cache["classes"], sample_rate=cache["sample_rate"])


def probe(train_rows, y_train, test_rows, y_test, *, seed, projection=False):
    """The dual probe (its geometry is of the training rows) and the geometry of the test
    rows, the voices never heard in training: (Report, {key: value})."""
    import probekit

    report = probekit.dual_probe(train_rows, y_train, X_test=test_rows, y_test=y_test,
                                 n_bootstrap=1000, seed=seed, save_predictions=True,
                                 projection=projection)
    return report, probekit.diagnose(test_rows, y_test, seed=seed).values


def training_voices(data: Path, count: int | None, seed: int) -> np.ndarray:
    """Which rows of ``train.csv`` a setting trains on: the clips of ``count`` training voices
    (a seeded choice) or, for None, all of them (boolean mask)."""
    voices = np.array([row["voice"] for row in _rows(data / "train.csv")])
    if count is None:
        return np.ones(len(voices), dtype=bool)
    names = np.unique(voices)
    if not 1 <= count <= len(names):
        raise ValueError(f"--train-voices {count}: the data has {len(names)} training voices")
    return np.isin(voices, np.random.default_rng([seed, 5]).choice(names, count, replace=False))


def parse_settings(text: str) -> list[int | None]:
    """``--train-voices`` "8,all" -> [8, None]."""
    settings = []
    for item in text.split(","):
        item = item.strip()
        if item != "all" and not (item.isdigit() and int(item) > 0):
            raise ValueError(f"--train-voices takes positive numbers or 'all', got {item!r}")
        settings.append(None if item == "all" else int(item))
    return settings


def setting_name(count: int | None) -> str:
    return "all" if count is None else f"voices{count}"


def split_datasets(cache: dict, keep: np.ndarray) -> dict:
    """{split: Dataset} of the cached splits, the training split cut to the rows ``keep``."""
    data = {}
    for name, (items, targets) in cache["splits"].items():
        mask = keep if name == "train" else np.ones(len(items), dtype=bool)
        data[name] = as_dataset(cache, [item for item, kept in zip(items, mask, strict=True)
                                        if kept], np.asarray(targets)[mask])
    return data


def step_budget(n_classes: int, n_train: int, steps: int) -> tuple[int, int]:
    """(batch size, epochs) of a fine-tuning run of about ``steps`` optimizer steps on
    ``n_train`` clips: batches of 64 (4 clips per class when there are fewer than 16 classes),
    at least 2 epochs."""
    batch_size = min(64, 4 * n_classes)
    return batch_size, max(2, round(steps * batch_size / n_train))


def fine_tune(top, data: dict, objective: str, *, seed: int, epochs: int, batch_size: int,
              lr: float, log):
    """A copy of ``top`` fine-tuned with ``objective`` ("ce" or "supcon") on ``data["train"]``,
    with the best epoch by validation kNN@20 on ``data["val"]`` restored: (the tuned encoder,
    the TrainResult)."""
    import torch

    from tuner.train import TrainConfig, fit

    tuned = copy.deepcopy(top)
    torch.manual_seed(seed)
    config = TrainConfig(objective=objective, epochs=epochs, batch_size=batch_size, m=4,
                         lr=lr, warmup_epochs=1, temperature=0.1, head_dim=None, seed=seed,
                         probe_every=max(1, epochs // 10), probe_linear=False,
                         probe_max_train=1000, progress=False, verbose=False)
    began = time.perf_counter()
    result = fit(tuned, data["train"], data["val"], config)
    log(f"  seed {seed} {objective}: {len(data['train'])} clips, {epochs} epochs in "
        f"{time.perf_counter() - began:.0f} s, best epoch {result.best_epoch} (val kNN@20 "
        f"{result.best_score:.3f})")
    return tuned, result


def run_seed(seed: int, top, cache: dict, keep: np.ndarray, *, steps: int, lr: float,
             projection: bool, log) -> tuple[dict, int]:
    """The four conditions for one seed, trained on the rows ``keep`` of the training split:
    ({condition: (Report, test-row geometry)}, epochs of each fine-tuning run). ``top`` is the
    trainable encoder (of the cached sequences, or of waveforms)."""
    from tuner.adapter import AdapterConfig, apply_adapter, train_adapter
    from tuner.embed import embed

    data = split_datasets(cache, keep)
    y = {name: dataset.targets for name, dataset in data.items()}
    batch_size, epochs = step_budget(len(cache["classes"]), len(data["train"]), steps)
    reports = {}
    frozen = {name: embed(top, data[name]) for name in ("train", "test")}  # val: not probed
    reports["frozen"] = probe(frozen["train"], y["train"], frozen["test"], y["test"], seed=seed,
                              projection=projection)
    adapter, _ = train_adapter(frozen["train"], y["train"],
                               AdapterConfig(epochs=3 * epochs, seed=seed))
    reports["adapter"] = probe(apply_adapter(adapter, frozen["train"]), y["train"],
                               apply_adapter(adapter, frozen["test"]), y["test"], seed=seed,
                               projection=projection)
    for objective in ("ce", "supcon"):
        tuned, _ = fine_tune(top, data, objective, seed=seed, epochs=epochs,
                             batch_size=batch_size, lr=lr, log=log)
        reports[objective] = probe(embed(tuned, data["train"]), y["train"],
                                   embed(tuned, data["test"]), y["test"], seed=seed,
                                   projection=projection)
    return reports, epochs


def mixtures(data: Path, split: str, classes: list[str], seed: int, *, count: int,
             gap: float = 0.1, sample_rate: int = 16_000):
    """``count`` multi-label clips of one split: two or three different words of one voice,
    one after the other with ``gap`` seconds of silence; labels = the set of words; seeded."""
    from tuner.audio import load_audio, read_manifest

    paths, labels = read_manifest(data / f"{split}.csv")
    voices = [row["voice"] for row in _rows(data / f"{split}.csv")]
    by_voice: dict[str, list[int]] = {}
    for index, voice in enumerate(voices):
        by_voice.setdefault(voice, []).append(index)
    rng = np.random.default_rng([seed, 11, ("train", "val", "test").index(split)])
    position = {name: i for i, name in enumerate(classes)}
    cache: dict[int, np.ndarray] = {}
    silence = np.zeros(int(gap * sample_rate), dtype=np.float32)
    waves, targets = [], np.zeros((count, len(classes)), dtype=np.float32)
    voice_names = sorted(by_voice)
    for row in range(count):
        members = by_voice[voice_names[rng.integers(len(voice_names))]]
        count = int(rng.integers(2, 4))
        chosen: list[int] = []
        for index in rng.permutation(members):
            if labels[index][0] not in {labels[c][0] for c in chosen}:
                chosen.append(int(index))
            if len(chosen) == count:
                break
        parts = []
        for index in chosen:
            if index not in cache:
                cache[index] = load_audio(paths[index], sample_rate)
            parts += [cache[index], silence]
            targets[row, position[labels[index][0]]] = 1.0
        waves.append(np.concatenate(parts[:-1]))
    return waves, targets


def _rows(manifest: Path) -> list[dict]:
    import csv

    with open(manifest, newline="") as stream:
        return list(csv.DictReader(stream))


def run_multilabel(seed: int, top, cache: dict, data: Path, *, epochs: int, lr: float,
                   max_train: int, log) -> dict:
    """Frozen / binary cross-entropy / Jaccard SupCon on word mixtures: {condition: (Report,
    neighbour Jaccard of the test rows)}."""
    import torch

    import probekit
    from tuner.data import WaveformDataset
    from tuner.embed import cache_sequences, embed
    from tuner.train import TrainConfig, fit

    classes, front, sets = cache["classes"], cache["front"], {}
    for split, count in (("train", max_train), ("val", max_train // 4),
                         ("test", max_train // 2)):
        waves, targets = mixtures(data, split, classes, seed, count=count,
                                  sample_rate=cache["sample_rate"])
        clips = WaveformDataset(waves, targets, classes, sample_rate=cache["sample_rate"])
        sets[split] = (clips if front is None
                       else as_dataset(cache, cache_sequences(front, clips), targets))
    y = {name: dataset.targets for name, dataset in sets.items()}

    def judge(encoder):
        test_rows = embed(encoder, sets["test"])
        report = probekit.dual_probe(embed(encoder, sets["train"]), y["train"],
                                     X_test=test_rows, y_test=y["test"], tags=classes,
                                     n_bootstrap=1000, seed=seed)
        held_out = probekit.diagnose(test_rows, tags=y["test"] > 0, seed=seed).values
        return report, held_out["neighbour_jaccard"]

    reports = {"frozen": judge(top)}
    for condition, objective in (("bce", "ce"), ("jaccard", "jaccard")):
        tuned = copy.deepcopy(top)
        torch.manual_seed(seed)
        config = TrainConfig(objective=objective, epochs=epochs, batch_size=64, lr=lr,
                             warmup_epochs=1, temperature=0.1, head_dim=None, seed=seed,
                             probe_every=0, progress=False, verbose=False)
        began = time.perf_counter()
        fit(tuned, sets["train"], None, config)
        log(f"  seed {seed} multi-label {condition}: {epochs} epochs in "
            f"{time.perf_counter() - began:.0f} s")
        reports[condition] = judge(tuned)
    return reports


def multilabel_markdown(rows: dict, epochs: int) -> str:
    columns = ["map", "best_knn_map", "micro_f1_tuned", "neighbour_jaccard"]
    lines = ["| condition | linear mAP | best kNN mAP | linear micro-F1 (tuned) | "
             "neighbour Jaccard |", "|---|---|---|---|---|"]
    for condition, entries in rows.items():
        cells = []
        for column in columns:
            values = np.array([e[column] for e in entries if e[column] is not None], float)
            if not len(values):
                cells.append("–")
                continue
            scale = 1.0 if column == "neighbour_jaccard" else 100.0
            text = f"{scale * values.mean():.2f}" if scale == 100.0 else f"{values.mean():.3f}"
            if len(values) > 1:
                text += f" ± {scale * values.std():.2f}" if scale == 100.0 \
                    else f" ± {values.std():.3f}"
            cells.append(text)
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    lines += ["", "Multi-label clips (2-3 words of one voice in a row; 1200 train / 600 test "
              "mixtures, 200 / 100 with --quick), test voices; mAP and F1 in percent, mean ± std "
              f"over seeds; neighbour Jaccard of the test rows; {epochs} epochs per fine-tuning "
              "run."]
    return "\n".join(lines) + "\n"


def summary(report, held_out: dict) -> dict:
    """The table's numbers: probe accuracies, the geometry of the test rows (``alignment``
    ...) and of the training rows (``train_alignment`` ...)."""
    knn = report.knn
    row = {"linear": report.linear["accuracy"], "best_knn": knn["best"]["accuracy"],
           "best_knn_setting": f"{knn['best']['vote']}@{knn['best']['k']}",
           "knn20": knn["weighted"].get("20", {}).get("accuracy")}
    row.update({key: held_out.get(key) for key in GEOMETRY_KEYS})
    row.update({f"train_{key}": report.geometry.get(key) for key in GEOMETRY_KEYS})
    return row


def markdown(settings: dict, info: dict) -> str:
    """One table per setting (mean ± std over seeds) and its paired tests, per seed."""
    columns = ["linear", "best_knn", "knn20", *GEOMETRY_KEYS]
    lines = []
    for setting in settings.values():
        lines += [f"{setting['title']}: {setting['clips']}, {setting['epochs']} epochs per "
                  "fine-tuning run", "",
                  "| condition | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for condition in CONDITIONS:
            cells = []
            for column in columns:
                values = np.array([r[column] for r in setting["rows"][condition]
                                   if r[column] is not None], dtype=float)
                if not len(values):
                    cells.append("–")
                    continue
                percent = column in ("linear", "best_knn", "knn20")
                scale, decimals = (100.0, 2) if percent else (1.0, 3)
                text = f"{scale * values.mean():.{decimals}f}"
                if len(values) > 1:
                    text += f" ± {scale * values.std():.{decimals}f}"
                cells.append(text)
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
        lines += ["", "Paired tests, supcon (B) against ce (A), per seed:", "",
                  "| seed | probe | A | B | B − A | 95% CI | McNemar p |",
                  "|---|---|---|---|---|---|---|"]
        for test in setting["tests"]:
            lines.append(f"| {test['seed']} | {test['probe']} | {100 * test['a']:.2f} | "
                         f"{100 * test['b']:.2f} | {100 * test['delta']:+.2f} | "
                         f"[{100 * test['low']:+.2f}, {100 * test['high']:+.2f}] | "
                         f"{test['p']:.3g} |")
        lines.append("")
    lines += ["Accuracies in percent on the test voices (never heard in training), mean ± std "
              "over seeds; kNN@20 is the weighted vote; geometry of the test rows (that of the "
              "training rows is in results.json as train_*).", "",
              f"Encoder: {info['encoder']}; data: {info['clips']}; machine: {info['machine']}; "
              f"wall time {info['seconds']:.0f} s; command: `{info['command']}`."]
    return "\n".join(lines) + "\n"


def paired_tests(seed: int, reports: dict) -> list[dict]:
    """McNemar and paired-bootstrap CI of supcon (B) against ce (A): linear and kNN@20."""
    frame = reports["ce"].compare(reports["supcon"])
    tests = []
    for row in frame[frame.metric == "accuracy"].itertuples():
        if row.probe == "linear" or (row.vote == "weighted" and row.k == 20):
            tests.append({"seed": seed, "probe": "linear" if row.probe == "linear"
                          else "kNN@20 weighted", "a": row.a, "b": row.b, "delta": row.delta,
                          "low": row.delta_ci95_low, "high": row.delta_ci95_high,
                          "p": row.p_mcnemar})
    return tests


def knn_curves(reports: dict, path: Path) -> None:
    """kNN (weighted) accuracy against k of all four conditions, with the linear probe of each
    as a dashed line."""
    from probekit.render.plots import OKABE_ITO, figure_style, pyplot

    plt = pyplot()
    with figure_style():
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for colour, (condition, report) in zip(OKABE_ITO, reports.items(), strict=False):
            ks = [int(k) for k in report.knn["weighted"]]
            values = [100 * report.knn["weighted"][str(k)]["accuracy"] for k in ks]
            ax.plot(ks, values, marker="o", color=colour, label=f"{condition}: kNN")
            ax.axhline(100 * report.linear["accuracy"], color=colour, linestyle="--",
                       linewidth=1, label=f"{condition}: linear")
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("k (neighbours)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Weighted kNN vs k (solid) and linear probe (dashed), test voices")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=150, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="small data, 1 seed, few steps")
    parser.add_argument("--data", type=Path, default=None,
                        help="a make_dataset.py output folder (default: made in OUT/data)")
    parser.add_argument("--seeds", default=None, help="comma list (default 0,1,2; quick: 0)")
    parser.add_argument("--train-voices", default=None,
                        help="settings: comma list of training-voice counts or 'all' "
                             "(default 8,all; quick: all)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps of each fine-tuning run (default 300; quick: 50)")
    parser.add_argument("--multilabel-epochs", type=int, default=None,
                        help="epochs of the multi-label runs (default 6; quick: 2)")
    parser.add_argument("--encoder", default="ge2e",
                        help="ge2e (default: its two lower LSTM layers cached), or any other "
                             "probekit finetune encoder (crepe, crepe:tiny, hf:DIR), fine-tuned "
                             "on waveforms in its last --train-last blocks")
    parser.add_argument("--train-last", type=int, default=1,
                        help="blocks fine-tuned of a non-GE2E encoder (default 1)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-seconds", type=float, default=1.6)
    parser.add_argument("--no-multilabel", action="store_true",
                        help="skip the multi-label variant (word mixtures)")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    try:
        import torch

        from tuner.encoders import GE2EEncoder, encoder_from_spec, freeze_all_but_last, split_ge2e
    except ImportError as error:
        log(f"error: needs torch and the tuner extra: pip install 'probekit[audio]' ({error})")
        return 2
    try:
        seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
        settings = parse_settings(args.train_voices or ("all" if args.quick else "8,all"))
    except ValueError as error:
        log(f"error: {error}")
        return 2
    steps = args.steps or (50 if args.quick else 300)
    multilabel_epochs = args.multilabel_epochs or (2 if args.quick else 6)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data or make_data(args.out, args.quick, seeds[0])
    try:
        masks = {setting_name(count): {seed: training_voices(data, count, seed)
                                       for seed in seeds} for count in settings}
        if args.encoder == "ge2e":
            front, top = split_ge2e(GE2EEncoder.pretrained(), 2)
        else:
            front, top = None, encoder_from_spec(args.encoder)
            freeze_all_but_last(top, args.train_last)
    except (ImportError, ValueError, FileNotFoundError) as error:
        log(f"error: {error}")
        return 2
    tick = time.perf_counter()
    cache = cached_splits(data, front, args.max_seconds, top.sample_rate
                          if front is None else front.sample_rate)
    sizes = {name: len(items) for name, (items, _) in cache["splits"].items()}
    log(f"{'front end cached' if front is not None else 'audio decoded'} for {sizes} clips in "
        f"{time.perf_counter() - tick:.0f} s")
    n_voices = len({row["voice"] for row in _rows(data / "train.csv")})
    results, first = {}, {}
    for count in settings:
        name = setting_name(count)
        setting = results[name] = {
            "title": (f"All {n_voices} training voices" if count is None
                      else f"{count} of the {n_voices} training voices (a seeded choice per "
                           "seed)"),
            "rows": {condition: [] for condition in CONDITIONS}, "tests": []}
        for seed in seeds:
            keep = masks[name][seed]
            judged, setting["epochs"] = run_seed(
                seed, top, cache, keep, steps=steps, lr=args.lr, log=log,
                projection=not args.quick and seed == seeds[0] and count == settings[0])
            setting["clips"] = f"{int(keep.sum())} training clips"
            reports = {condition: report for condition, (report, _) in judged.items()}
            first.setdefault(name, reports)
            for condition, (report, held_out) in judged.items():
                setting["rows"][condition].append({"seed": seed, **summary(report, held_out)})
                log(f"  {name} seed {seed} {condition}: linear "
                    f"{100 * report.linear['accuracy']:.2f}, best kNN "
                    f"{100 * report.knn['best']['accuracy']:.2f}")
            setting["tests"] += paired_tests(seed, reports)
    multilabel_rows: dict[str, list] = {}
    if not args.no_multilabel:
        for seed in seeds:
            for condition, (report, held_out_jaccard) in run_multilabel(
                    seed, top, cache, data, epochs=multilabel_epochs,
                    lr=args.lr, max_train=200 if args.quick else 1200, log=log).items():
                best = report.knn["best"]
                multilabel_rows.setdefault(condition, []).append({
                    "seed": seed, "map": report.linear["map"], "best_knn_map": best["map"],
                    "micro_f1_tuned": report.linear.get("micro_f1_tuned"),
                    "neighbour_jaccard": held_out_jaccard,
                    "train_neighbour_jaccard": report.geometry.get("neighbour_jaccard")})
                log(f"  seed {seed} multi-label {condition}: linear mAP "
                    f"{100 * report.linear['map']:.2f}, best kNN mAP {100 * best['map']:.2f}")
    for name, reports in first.items():
        knn_curves(reports, args.out / f"knn_curves_{name}.png")
        if not args.quick:
            from probekit.render.plots import projection

            for condition, report in reports.items():
                if "projection_xy" in report.arrays:
                    fig = projection(report)
                    fig.savefig(args.out / f"umap_{name}_{condition}.png", dpi=120,
                                metadata={"Software": None}, bbox_inches="tight")
    info = {"clips": f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test clips "
                     f"of {len(cache['classes'])} words",
            "encoder": args.encoder,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
                       f"{torch.__version__}, "
                       f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}",
            "seconds": time.perf_counter() - began,
            "command": "python examples/spoken_words/run.py " + " ".join(
                sys.argv[1:] if argv is None else argv)}
    (args.out / "results.json").write_text(json.dumps(
        {"settings": results, "multilabel_rows": multilabel_rows, "info": info,
         "seeds": seeds, "steps": steps, "multilabel_epochs": multilabel_epochs},
        indent=2, default=float) + "\n")
    text = markdown(results, info)
    if multilabel_rows:
        text += "\n" + multilabel_markdown(multilabel_rows, multilabel_epochs)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
