"""Regenerate the demo data that ships inside probekit (``src/probekit/demo_data/``).

One command, end to end, deterministic:

    python examples/spoken_words/make_demo_data.py --out src/probekit/demo_data/

1. synthesises the spoken-words set with ``make_dataset.py`` exactly as ``run.py``'s full
   setting does (its ``FULL_DATA`` arguments, seed 0), or reuses ``--data DIR``;
2. embeds every clip with the frozen pretrained GE2E encoder of the Resemblyzer wheel
   (``frozen``);
3. fine-tunes GE2E's top LSTM layer and output layer with SupCon on all training voices, with
   ``run.py``'s functions and its all-voices setting (300 optimizer steps, lr 1e-3, batches of
   64 with 4 clips per word, temperature 0.1, the best epoch by validation kNN@20 kept, seed 0),
   and embeds every clip again (``supcon``);
4. keeps the whole test split (every held-out voice) and a seeded subsample of the training
   split stratified by word (``--per-word`` clips of each word), the same rows in both spaces;
5. writes ``spoken_words.npz`` (``np.savez_compressed``, no object arrays, float16 embeddings,
   zip entries stamped with a fixed date so that the same embeddings give the same bytes) and
   ``DATA_CARD.md`` (what the data are, how they were made, licences, versions, the file's
   SHA-256 and the dual-probe accuracies of both spaces in float32 and float16).

``--quick`` makes a small version (10 words, 6 voice variants, 50 steps) for the tests.
Needs espeak-ng and sox (Debian packages), torch, and Resemblyzer (for its GE2E weights).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FILE_NAME = "spoken_words.npz"
CARD_NAME = "DATA_CARD.md"
SPACES = ("frozen", "supcon")
KEYS = ("frozen_train", "frozen_test", "supcon_train", "supcon_test", "train_labels",
        "test_labels", "train_voices", "test_voices")
STEPS, QUICK_STEPS = 300, 50  # run.py's defaults (full, --quick)
PER_WORD, QUICK_PER_WORD = 70, 20
LR = 1e-3  # run.py's default --lr
MAX_SECONDS = 1.6  # run.py's default --max-seconds: the centre crop every clip is embedded from
SUBSAMPLE_STREAM = 13  # the training subsample draws from np.random.default_rng([seed, 13])
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def load_run():
    """``run.py`` of this folder as a module (its functions are reused, not copied)."""
    spec = importlib.util.spec_from_file_location("spoken_words_run", HERE / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest_rows(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def stratified_rows(labels: np.ndarray, per_word: int, seed: int) -> np.ndarray:
    """Sorted row indices: ``per_word`` rows of every label (all of a label's rows when it has
    fewer), drawn without replacement by ``np.random.default_rng([seed, 13])``, label by label
    in sorted order."""
    rng = np.random.default_rng([seed, SUBSAMPLE_STREAM])
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        chosen.append(rng.choice(rows, min(per_word, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed`` of ``arrays`` (refusing object arrays), with every zip entry
    re-stamped with a fixed date: numpy stamps the current time, which would change the bytes
    (and the SHA-256) of identical arrays."""
    for key, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"{key} is an object array; the demo file must load without pickle")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    fixed = io.BytesIO()
    with zipfile.ZipFile(buffer) as source, \
            zipfile.ZipFile(fixed, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            stamped = zipfile.ZipInfo(entry.filename, date_time=ZIP_DATE)
            stamped.compress_type = zipfile.ZIP_DEFLATED
            stamped.external_attr = 0o644 << 16
            target.writestr(stamped, source.read(entry))
    return fixed.getvalue()


def check_arrays(path: Path) -> dict[str, np.ndarray]:
    """The file read back with ``allow_pickle=False``; its keys, dtypes, shapes and values
    checked."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    if set(arrays) != set(KEYS):
        raise AssertionError(f"{path.name} holds {sorted(arrays)}, expected {sorted(KEYS)}")
    for split in ("train", "test"):
        n = len(arrays[f"{split}_labels"])
        for space in SPACES:
            matrix = arrays[f"{space}_{split}"]
            if matrix.dtype != np.float16 or matrix.shape != (n, 256):
                raise AssertionError(f"{space}_{split}: {matrix.dtype} {matrix.shape}")
            if not np.isfinite(matrix).all():
                raise AssertionError(f"{space}_{split} has non-finite values")
            norms = np.linalg.norm(matrix.astype(np.float32), axis=1)
            if not np.allclose(norms, 1.0, atol=1e-2):
                raise AssertionError(f"{space}_{split}: rows of norm {norms.min():.3f} to "
                                     f"{norms.max():.3f}, not 1")
        for key in (f"{split}_labels", f"{split}_voices"):
            if arrays[key].dtype.kind != "U" or arrays[key].shape != (n,):
                raise AssertionError(f"{key}: {arrays[key].dtype} {arrays[key].shape}")
    return arrays


def probe_numbers(train, y_train, test, y_test, seed: int) -> dict:
    """Linear and weighted kNN@20 test accuracies with their 95% bootstrap CIs, from
    ``probekit.dual_probe(train, y_train, X_test=test, y_test=y_test, geometry=False)``."""
    import probekit

    report = probekit.dual_probe(train, y_train, X_test=test, y_test=y_test, geometry=False,
                                 seed=seed)
    knn = report.knn["weighted"]["20"]
    return {"linear": report.linear["accuracy"], "linear_ci": list(report.linear["ci95"]),
            "knn20": knn["accuracy"], "knn20_ci": list(knn["ci95"]),
            "C": report.linear.get("C")}


def tool_version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return " ".join(out.split())


def debian_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


def resemblyzer_facts() -> dict:
    """The installed Resemblyzer's version, licence (from its wheel metadata: the classifier
    and the first line of the LICENSE file) and the SHA-256 of its GE2E weights."""
    from tuner.encoders import resemblyzer_weights_path

    distribution = importlib.metadata.distribution("Resemblyzer")
    classifiers = [value.removeprefix("License :: OSI Approved :: ")
                   for value in distribution.metadata.get_all("Classifier") or []
                   if value.startswith("License ::")]
    licence_text = next((f.read_text().strip() for f in map(distribution.locate_file,
                         distribution.files or []) if f.name == "LICENSE"), "")
    heading = " ".join(licence_text.split("\n")[0:2]).split()
    weights = Path(resemblyzer_weights_path())
    return {"version": distribution.version, "classifier": ", ".join(classifiers) or "none",
            "licence_heading": " ".join(heading) or "no LICENSE file",
            "copyright": next((line.strip() for line in licence_text.splitlines()
                               if line.strip().startswith("Copyright 2")), "not stated"),
            "weights": weights.name,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}


def reflow(markdown: str, width: int = 100) -> str:
    """Paragraphs and list items re-wrapped to ``width`` columns; headings, tables, code blocks
    and blank lines kept as they are."""
    out, block, fenced = [], None, False

    def flush():
        if block is not None:
            first, hanging, text = block
            out.append(textwrap.fill(text, width, initial_indent=first,
                                     subsequent_indent=hanging, break_long_words=False,
                                     break_on_hyphens=False))

    for line in markdown.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block, fenced = None, not fenced
            out.append(line)
            continue
        item = re.match(r"^(\s*)(- |\d+\. |> )?(.*)$", line)
        starts = item.group(2) is not None
        if fenced or not stripped or stripped.startswith(("#", "|")):
            flush()
            block = None
            out.append(line)
        elif block is None or starts:
            flush()
            prefix = item.group(1) + (item.group(2) or "")
            hanging = "> " if item.group(2) == "> " else " " * len(prefix)
            block = (prefix, hanging, item.group(3))
        else:
            block = (block[0], block[1], f"{block[2]} {stripped}")
    flush()
    return "\n".join(out)


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def interval(ci) -> str:
    return f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def data_card(facts: dict) -> str:
    """DATA_CARD.md from the facts gathered while the file was made."""
    f = facts
    words = ", ".join(f["words"])
    counts = f["counts"]
    per_word_train = sorted(set(counts["train_per_word"].values()))
    per_word_test = sorted(set(counts["test_per_word"].values()))
    if len(per_word_train) == 1 and len(per_word_test) == 1:
        per_class = (f"Every word has **{per_word_train[0]} training rows and {per_word_test[0]} "
                     "test rows** in the file.")
    else:
        per_class = "\n".join(["| word | training rows | test rows |", "|---|---|---|"] + [
            f"| {word} | {counts['train_per_word'][word]} | {counts['test_per_word'][word]} |"
            for word in f["words"]])
    probe_lines = ["| space | embeddings | training rows | linear | 95% CI | kNN@20 weighted "
                   "| 95% CI |", "|---|---|---|---|---|---|---|"]
    for row in f["probes"]:
        probe_lines.append(
            f"| {row['space']} | {row['precision']} | {row['train_rows']} | "
            f"{percent(row['linear'])} | {interval(row['linear_ci'])} | "
            f"{percent(row['knn20'])} | {interval(row['knn20_ci'])} |")
    in_file = {"train": f"{counts['train_rows']} (a subsample)",
               "val": "none (it only picked the fine-tuning epoch)",
               "test": f"{counts['test_rows']} (all)"}
    split_table = "\n".join(
        ["  | split | voices | clips | in this file |", "  |---|---|---|---|"]
        + [f"  | {name} | {counts['voices'][name]} | {counts['clips'][name]} | {in_file[name]} |"
           for name in ("train", "val", "test")])
    r = f["resemblyzer"]
    setting = "quick" if f["quick"] else "full"
    by_case = {(row["space"], row["precision"], row["train_rows"]): row for row in f["probes"]}
    n_kept = counts["train_rows"]
    shifts = [abs(by_case[(space, "float16", n_kept)][key] - by_case[(space, "float32",
                                                                       n_kept)][key])
              for space in SPACES for key in ("linear", "knn20")]
    inside = all(low <= by_case[(space, "float32", n_kept)][key] <= high
                 for space in SPACES for key in ("linear", "knn20")
                 for low, high in [by_case[(space, "float16", n_kept)][f"{key}_ci"]])
    rounding = (f"Against float32, rounding moves the four test accuracies above by at most "
                f"{100 * max(shifts):.2f} points"
                + (", and every float32 accuracy lies inside the float16 one's 95% CI."
                   if inside else "; some lie outside the other's 95% CI."))
    n_all = counts["clips"]["train"]
    gaps = [by_case[(space, "float32", n_all)][key] - by_case[(space, "float32", n_kept)][key]
            for space in SPACES for key in ("linear", "knn20")]
    subsample_effect = (f"up to {100 * max(gaps):.2f} points lower" if max(gaps) > 0
                        else "no lower")
    espeak_deb = f"Debian package {f['espeak_deb']}" if f["espeak_deb"] else "version unknown"
    sox_deb = f"Debian package {f['sox_deb']}" if f["sox_deb"] else "version unknown"
    quick_note = ("\n> **This is a `--quick` build** (a small data set and a short fine-tuning "
                  "run, for the tests). It is not the shipped demo data.\n"
                  if f["quick"] else "")
    return reflow(f"""# Demo data: spoken words, before and after contrastive tuning
{quick_note}
`{FILE_NAME}` holds the embeddings behind `probekit demo`. They are the same clips of spoken
words in two embedding spaces of one speech encoder:

- **frozen**: the pretrained GE2E encoder as it is;
- **supcon**: the same encoder after fine-tuning its top layers with supervised contrastive
  learning (SupCon) on the words.

The task is to tell which word was spoken. The test rows come from voices that never occur in
the training rows, nor in the fine-tuning data.

## Arrays

Load with `np.load(path, allow_pickle=False)`: there are no object arrays.

| key | dtype | shape | content |
|---|---|---|---|
| `frozen_train` | float16 | {counts['train_rows']} × 256 | frozen embeddings of the training rows |
| `frozen_test` | float16 | {counts['test_rows']} × 256 | frozen embeddings of the test rows |
| `supcon_train` | float16 | {counts['train_rows']} × 256 | tuned embeddings of the training rows |
| `supcon_test` | float16 | {counts['test_rows']} × 256 | tuned embeddings of the test rows |
| `train_labels`, `test_labels` | unicode | (rows,) | the spoken word |
| `train_voices`, `test_voices` | unicode | (rows,) | the voice: `accent+variant` of espeak-ng |

Row *i* of `frozen_train` and of `supcon_train` is the same clip, and so is row *i* of the two
test matrices. Every embedding has unit L2 norm up to float16 rounding. The values are not
negative, because GE2E ends with a ReLU before it normalises.

## The data

The clips are synthetic speech. Every clip is one word spoken by espeak-ng in one voice.

- **Words ({len(f['words'])})**: {words}. These are the first {len(f['words'])} words of the
  Speech Commands vocabulary; no Speech Commands audio is used.
- **Voices ({f['n_voices']})**: {len(f['accents'])} English accents × {len(f['variants'])}
  espeak-ng voice variants. A voice is one accent + variant pair.
  - Accents: {', '.join(f['accents'])}.
  - Variants: {', '.join(f['variants'])}.
- **Per clip**: speed {f['speeds']} words per minute (each word is spoken at every speed by
  every voice), pitch {f['pitches']}. The audio is 16 kHz mono.
  - White noise is added at an SNR drawn per clip from {f['snrs']} dB.
  - A seeded {f['reverb_share']} of the clips also get light reverberation (`sox reverb 30 50
    40`).
  - The encoder sees the centre {MAX_SECONDS} s of each clip (shorter clips are used whole).
- **Split by voice**, seeded. The voices of the test split (and of the validation split) are
  never heard in training:

{split_table}

- **Training rows in the file**: a seeded subsample of the training split, stratified by word:
  {f['per_word']} clips of each word, drawn without replacement. They come from
  {counts['train_voices_kept']} of the {counts['voices']['train']} training voices. This keeps
  the file small. The fine-tuning itself used all {counts['clips']['train']} training clips.
- **Test rows in the file**: the whole test split, every clip of the
  {counts['voices']['test']} held-out voices: {', '.join(f['test_voices'])}.

{per_class}

## How it was made

One command regenerates the file from nothing (it also synthesises the audio):

```bash
{f['command']}
```

Running it again on the same machine and versions gives the same bytes: the SHA-256 is below.
Another CPU, thread count or torch version can change the last bits of the fine-tuned weights.

1. **Audio**: `examples/spoken_words/make_dataset.py` with the {setting} setting of
   `examples/spoken_words/run.py` (`{' '.join(f['data_arguments'])}`) and seed {f['seed']}.
   The seed fixes the voice split, each clip's SNR and reverberation, and the noise.
2. **Frozen embeddings**: GE2E with its pretrained weights. The two lower LSTM layers are
   computed once and cached; the top LSTM layer and the output layer map them to the
   embedding, exactly as the whole encoder does.
3. **Fine-tuning** (`run.py`'s `fine_tune`, its all-voices setting):
   - trained: the top LSTM layer and the output layer (Linear 256 → 256). The two lower LSTM
     layers stay frozen.
   - data: all {counts['clips']['train']} clips of the {counts['voices']['train']} training
     voices.
   - loss: SupCon on the embedding itself (no projection head), temperature 0.1.
   - batches of {f['batch_size']} clips, {f['m']} clips per word in every batch.
   - AdamW, lr {f['lr']:g}, weight decay 1e-4, gradient clipping at norm 1, one warm-up epoch,
     then cosine decay.
   - budget: about {f['steps']} optimizer steps, which is {f['epochs']} epochs of
     {f['batches_per_epoch']} batches ({f['epochs'] * f['batches_per_epoch']} steps).
   - checkpoint: the epoch with the best weighted kNN@20 accuracy on the validation voices.
     That was epoch {f['best_epoch']} of {f['epochs']}, at {percent(f['best_score'])} %.
   - seed {f['seed']}: torch's generator, the m-per-class batch sampler and the training rows
     the validation probe is fitted on.
4. **Rows kept**: the whole test split and the stratified training subsample above, drawn
   with `numpy.random.default_rng([{f['seed']}, {SUBSAMPLE_STREAM}])`.
5. **Storage**: float16, written with `numpy.savez_compressed`. The zip entries get a fixed
   date, so identical arrays give an identical file.

## What the probes find

`probekit.dual_probe(train, y_train, X_test=test, y_test=y_test, geometry=False)` with its
defaults (seed 0, 1000 bootstrap resamples), on the test rows. The float16 rows are the
file's arrays; the float32 rows are the same embeddings before rounding. The last two rows
use all training clips instead of the subsample, for comparison. Accuracies are in percent.

{chr(10).join(probe_lines)}

## Encoder

GE2E, the speaker encoder of Wan et al., "Generalized End-to-End Loss for Speaker
Verification" (ICASSP 2018): three LSTM layers of 256 units on 40-band mel frames, then a
linear layer, a ReLU and L2 normalisation. It was trained to tell speakers apart, not words.

The weights are the file `{r['weights']}` of the Resemblyzer {r['version']} wheel (SHA-256
`{r['weights_sha256']}`), loaded into probekit's own PyTorch implementation.

## Licences

- **Resemblyzer and its weights**: the wheel's metadata gives the licence classifier
  "{r['classifier']}". Its LICENSE file is the {r['licence_heading']}, with the notice
  "{r['copyright']}". The weights file ships inside that wheel with no separate licence, so
  we take it to be under the same terms. The Apache licence allows redistribution of
  derived work; these embeddings are outputs of the model, not the weights.
- **espeak-ng** ({espeak_deb}): Debian's copyright file gives the GNU GPL, version 3 or later,
  for the program and its data files, voices included. A few source files have other
  permissive notices. The file says nothing about the speech the program produces. The GPL
  covers the program, not its output in general. No audio ships here, only embeddings
  computed from it.
- **sox** ({sox_deb}): GPL-2+ or LGPL-2.1+, per its Debian copyright file. It only resampled
  the audio and added reverberation.
- The words are common English words.

This is a summary of the licence files we read, not legal advice.

## Versions

- probekit {f['versions']['probekit']}, torch {f['versions']['torch']}, numpy
  {f['versions']['numpy']}, Python {f['versions']['python']}.
- espeak-ng {f['versions']['espeak']}, SoX {f['versions']['sox']}.
- Machine: {f['versions']['machine']}.

## Known limits

- **Synthetic speech.** espeak-ng is a formant synthesiser: its voices are cleaner and more
  regular than people. The accents and variants are parameter settings, not speakers. Accuracy
  here says little about real recordings.
- **Small vocabulary.** {len(f['words'])} single words, isolated, from a fixed list, with
  balanced classes. A real keyword-spotting task has more words, unbalanced classes,
  silence and unknown words.
- **Few voices.** The test set has {counts['voices']['test']} voices. Its confidence intervals
  reflect the sampling of clips, not which voices happened to be drawn for the test split.
- **One seed.** Both spaces come from one split, one fine-tuning run and one subsample.
- **Subsampled training rows.** The file has {f['per_word']} of the {f['train_clips_per_word']}
  training clips of each word. Probes fitted on them score {subsample_effect} than fitted on
  all clips; see the table above.
- **Float16.** The file stores half precision. {rounding}

## Checksum

SHA-256 of `{FILE_NAME}`: `{f['sha256']}`
""")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for spoken_words.npz and DATA_CARD.md")
    parser.add_argument("--data", type=Path, default=None,
                        help="reuse a make_dataset.py output folder made with the same "
                             "arguments (default: synthesise it)")
    parser.add_argument("--work", type=Path, default=None,
                        help="synthesise the audio into WORK/data and keep it (default: a "
                             "temporary folder, deleted at the end)")
    parser.add_argument("--quick", action="store_true",
                        help="run.py's quick data (10 words, 6 variants), 50 steps, "
                             f"{QUICK_PER_WORD} training rows per word: for the tests")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps of the fine-tuning (default {STEPS}; "
                             f"quick: {QUICK_STEPS})")
    parser.add_argument("--per-word", type=int, default=None,
                        help=f"training rows kept per word (default {PER_WORD}; quick: "
                             f"{QUICK_PER_WORD})")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    try:
        import torch  # noqa: F401

        import tuner.encoders  # noqa: F401
    except ImportError as error:
        log(f"error: needs torch and the tuner extra: pip install 'probekit[audio]' ({error})")
        return 2
    run = load_run()
    seed = 0
    steps = args.steps or (QUICK_STEPS if args.quick else STEPS)
    per_word = args.per_word or (QUICK_PER_WORD if args.quick else PER_WORD)
    if steps < 1 or per_word < 1:
        log("error: --steps and --per-word must be positive")
        return 2
    temporary = None
    try:
        if args.data is not None:
            data = args.data
            if not (data / "manifest.csv").is_file():
                log(f"error: {data} has no manifest.csv (a make_dataset.py output folder)")
                return 2
        else:
            if not shutil.which("espeak-ng") or not shutil.which("sox"):
                log("error: needs espeak-ng and sox: apt-get install espeak-ng sox")
                return 2
            work = args.work
            if work is None:
                temporary = tempfile.TemporaryDirectory(prefix="probekit_demo_")
                work = Path(temporary.name)
            tick = time.perf_counter()
            data = run.make_data(work, args.quick, seed)
            log(f"data in {data} ({time.perf_counter() - tick:.0f} s)")
        return build(args, run, data, seed=seed, steps=steps, per_word=per_word, log=log,
                     began=began)
    finally:
        if temporary is not None:
            temporary.cleanup()


def build(args, run, data: Path, *, seed: int, steps: int, per_word: int, log,
          began: float) -> int:
    """Steps 2-5 on the synthesised data set ``data``."""
    import torch

    import probekit
    from tuner.embed import embed
    from tuner.encoders import GE2EEncoder, split_ge2e

    front, top = split_ge2e(GE2EEncoder.pretrained(), 2)
    tick = time.perf_counter()
    cache = run.cached_splits(data, front, MAX_SECONDS, front.sample_rate)
    classes = list(cache["classes"])
    sizes = {name: len(items) for name, (items, _) in cache["splits"].items()}
    log(f"front end cached for {sizes} clips in {time.perf_counter() - tick:.0f} s")
    rows = {name: manifest_rows(data / f"{name}.csv") for name in ("train", "val", "test")}
    labels = {name: np.array([row["label"] for row in rows[name]]) for name in rows}
    voices = {name: np.array([row["voice"] for row in rows[name]]) for name in rows}
    for name, (_, targets) in cache["splits"].items():  # the manifests and the cache agree
        if not (np.array(classes)[np.asarray(targets)] == labels[name]).all():
            raise AssertionError(f"{name}.csv and the cached {name} split disagree")

    keep = run.training_voices(data, None, seed)  # all training voices
    datasets = run.split_datasets(cache, keep)
    embeddings = {"frozen": {name: embed(top, datasets[name]) for name in ("train", "test")}}
    log(f"frozen embeddings: {embeddings['frozen']['train'].shape[0]} train, "
        f"{embeddings['frozen']['test'].shape[0]} test")
    batch_size, epochs = run.step_budget(len(classes), len(datasets["train"]), steps)
    tick = time.perf_counter()
    tuned, result = run.fine_tune(top, datasets, "supcon", seed=seed, epochs=epochs,
                                  batch_size=batch_size, lr=LR, log=log)
    tuning_seconds = time.perf_counter() - tick
    embeddings["supcon"] = {name: embed(tuned, datasets[name]) for name in ("train", "test")}

    chosen = stratified_rows(labels["train"], per_word, seed)
    arrays = {}
    for space in SPACES:
        arrays[f"{space}_train"] = embeddings[space]["train"][chosen].astype(np.float16)
        arrays[f"{space}_test"] = embeddings[space]["test"].astype(np.float16)
    arrays.update(train_labels=labels["train"][chosen], test_labels=labels["test"],
                  train_voices=voices["train"][chosen], test_voices=voices["test"])
    arrays = {key: np.ascontiguousarray(arrays[key]) for key in KEYS}
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / FILE_NAME
    content = npz_bytes(arrays)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(content)
    partial.replace(target)
    stored = check_arrays(target)
    sha256 = hashlib.sha256(content).hexdigest()
    log(f"wrote {target}: {len(content) / 1e6:.2f} MB, sha256 {sha256}")

    probes = []
    cases = []  # (space, precision, training rows, their labels, test rows)
    for space in SPACES:
        cases += [(space, "float32", embeddings[space]["train"][chosen], stored["train_labels"],
                   embeddings[space]["test"]),
                  (space, "float16", stored[f"{space}_train"], stored["train_labels"],
                   stored[f"{space}_test"])]
    cases += [(space, "float32", embeddings[space]["train"], labels["train"],
               embeddings[space]["test"]) for space in SPACES]
    for space, precision, train, y_train, test in cases:
        tick = time.perf_counter()
        numbers = probe_numbers(train, y_train, test, stored["test_labels"], seed)
        probes.append({"space": space, "precision": precision, "train_rows": len(train),
                       **numbers})
        log(f"  {space:6s} {precision} ({len(train)} training rows): linear "
            f"{percent(numbers['linear'])} {interval(numbers['linear_ci'])}, kNN@20 "
            f"{percent(numbers['knn20'])} {interval(numbers['knn20_ci'])} "
            f"({time.perf_counter() - tick:.0f} s)")
    probes.sort(key=lambda row: (row["train_rows"] != len(chosen), SPACES.index(row["space"]),
                                 row["precision"] != "float32"))

    manifest = manifest_rows(data / "manifest.csv")
    split_of = {row["voice"]: row["split"] for row in manifest}
    accents, variants = [], []
    for row in manifest:
        accent, variant = row["voice"].split("+")
        accents += [accent] if accent not in accents else []
        variants += [variant] if variant not in variants else []

    def values(column, cast):
        return ", ".join(str(v) for v in sorted({cast(row[column]) for row in manifest}))

    command = ["python", "examples/spoken_words/make_demo_data.py", "--out", str(args.out)]
    command += ["--quick"] if args.quick else []
    command += ["--steps", str(steps)] if steps != (QUICK_STEPS if args.quick else STEPS) else []
    command += (["--per-word", str(per_word)]
                if per_word != (QUICK_PER_WORD if args.quick else PER_WORD) else [])
    resemblyzer = resemblyzer_facts()
    espeak_version = re.search(r"text-to-speech: (\S+)", tool_version(["espeak-ng",
                                                                     "--version"]))
    espeak_version = espeak_version.group(1) if espeak_version else "(version unknown)"
    sox_version = tool_version(["sox", "--version"]).removeprefix("sox: SoX ")
    train_clips_per_word = {int(n) for n in np.unique(labels["train"], return_counts=True)[1]}
    facts = {
        "quick": args.quick, "seed": seed, "command": " ".join(command),
        "data_arguments": run.QUICK_DATA if args.quick else run.FULL_DATA,
        "words": classes, "accents": accents, "variants": variants,
        "n_voices": len(split_of), "speeds": values("speed", int),
        "pitches": values("pitch", int), "snrs": values("snr_db", lambda v: int(float(v))),
        "reverb_share": f"{np.mean([row['reverb'] == '1' for row in manifest]):.0%}",
        "test_voices": sorted(set(voices["test"])),
        "counts": {
            "clips": sizes,
            "voices": {name: len(set(voices[name])) for name in rows},
            "train_rows": len(chosen), "test_rows": len(labels["test"]),
            "train_voices_kept": len(set(voices["train"][chosen])),
            "train_per_word": {w: int((stored["train_labels"] == w).sum()) for w in classes},
            "test_per_word": {w: int((stored["test_labels"] == w).sum()) for w in classes},
        },
        "train_clips_per_word": "–".join(str(n) for n in sorted(train_clips_per_word)),
        "per_word": per_word, "steps": steps, "epochs": epochs, "batch_size": batch_size,
        "m": 4, "lr": LR, "batches_per_epoch": -(-len(datasets["train"]) // batch_size),
        "best_epoch": result.best_epoch, "best_score": result.best_score,
        "probes": probes, "sha256": sha256, "resemblyzer": resemblyzer,
        "espeak_deb": debian_version("espeak-ng"), "sox_deb": debian_version("sox"),
        "versions": {"probekit": probekit.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version(),
                     "espeak": espeak_version, "sox": sox_version,
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} torch "
                                f"threads, {'CUDA' if torch.cuda.is_available() else 'CPU'}"},
    }
    (args.out / CARD_NAME).write_text(data_card(facts))
    log(f"wrote {args.out / CARD_NAME}")
    print(f"{target}: {len(content)} bytes, sha256 {sha256}; {len(chosen)} train rows "
          f"({per_word} per word), {len(labels['test'])} test rows; fine-tuning "
          f"{tuning_seconds:.0f} s, total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
