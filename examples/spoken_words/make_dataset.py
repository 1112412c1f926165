"""Synthesise a spoken-word classification set like Speech Commands, offline and reproducibly.

Every clip is one word spoken by Debian's ``espeak-ng`` with one English accent and one voice
variant, at one speed and pitch, resampled to 16 kHz mono by ``sox``, with light reverberation
(``sox reverb``) on a seeded third of the clips and seeded white noise at one of several SNRs.
The split is **voice-disjoint**: a "voice" is an accent + variant pair, and the voices of the
test split (and of the validation split) are never heard in training.

    python examples/spoken_words/make_dataset.py --out data/spoken_words           # full set
    python examples/spoken_words/make_dataset.py --out data/quick --words 10 \\
        --variants m1,m3,f2,f4,klatt --speeds 160 --pitches 50                       # small

Writes ``<out>/<word>/<voice>_s<speed>_p<pitch>.wav``, ``<out>/manifest.csv`` with columns
``path,label,voice,split,speed,pitch,snr_db,reverb`` (paths relative to the manifest) and one
manifest per split (``train.csv``, ``val.csv``, ``test.csv``) for ``probekit finetune``. The same
arguments and seed give the same files, byte for byte. Needs ``espeak-ng`` and ``sox``
(``apt-get install espeak-ng sox``) and the Python packages numpy and soundfile.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SPEECH_COMMANDS = (
    "yes no up down left right on off stop go zero one two three four five six seven eight "
    "nine bed bird cat dog happy house marvin sheila tree wow backward forward follow learn "
    "visual").split()
ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
            "klatt2", "klatt3", "grandma")
SAMPLE_RATE = 16_000


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def installed_variants() -> list[str]:
    """Every voice variant espeak-ng has installed (``espeak-ng --voices=variant``)."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[1:]
    return [line.split()[4].removeprefix("!v/") for line in listing if len(line.split()) > 4]


def voice_split(voices: list[str], seed: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, str]:
    """Voices -> train / val / test, seeded: whole voices go to one split."""
    order = np.random.default_rng([seed, 7]).permutation(len(voices))
    n_val = max(1, round(fractions[1] * len(voices)))
    n_test = max(1, round(fractions[2] * len(voices)))
    split = {}
    for rank, index in enumerate(order):
        split[voices[index]] = ("test" if rank < n_test else "val" if rank < n_test + n_val
                                else "train")
    return split


def synthesise(job: dict) -> dict:
    """One clip: espeak-ng -> sox (16 kHz mono, optional reverb) -> seeded noise -> WAV."""
    import soundfile

    speech = subprocess.run(
        ["espeak-ng", "-v", f"{job['accent']}+{job['variant']}", "-s", str(job["speed"]),
         "-p", str(job["pitch"]), "--stdout", job["word"]],
        capture_output=True, check=True).stdout
    effects = ["reverb", "30", "50", "40"] if job["reverb"] else []
    converted = subprocess.run(
        ["sox", "-t", "wav", "-", "-t", "wav", "-e", "float", "-b", "32", "-r",
         str(SAMPLE_RATE), "-c", "1", "-", *effects],
        input=speech, capture_output=True, check=True).stdout
    wave, rate = soundfile.read(io.BytesIO(converted), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    rng = np.random.default_rng(job["noise_seed"])
    power = float(np.mean(wave**2)) or 1e-8
    noise = rng.normal(scale=np.sqrt(power / 10 ** (job["snr_db"] / 10)), size=wave.shape)
    wave = np.clip(wave + noise, -1.0, 1.0).astype(np.float32)
    path = Path(job["root"]) / job["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
    return {"seconds": len(wave) / SAMPLE_RATE}


def plan(words, accents, variants, speeds, pitches, snrs, seed, root) -> list[dict]:
    """Every clip to make, with its split, SNR, reverb and noise seed (all seeded)."""
    voices = [f"{accent}+{variant}" for accent in accents for variant in variants]
    split = voice_split(voices, seed)
    rng = np.random.default_rng(seed)
    jobs = []
    for word, voice, speed, pitch in itertools.product(words, voices, speeds, pitches):
        accent, variant = voice.split("+")
        name = f"{word}/{voice.replace('+', '_')}_s{speed}_p{pitch}.wav"
        jobs.append({"word": word, "voice": voice, "accent": accent, "variant": variant,
                     "speed": speed, "pitch": pitch, "split": split[voice],
                     "snr_db": float(rng.choice(snrs)), "reverb": bool(rng.random() < 1 / 3),
                     "noise_seed": int(rng.integers(2**63)), "path": name, "root": str(root)})
    return jobs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--words", default="35",
                        help="a number (the first N Speech Commands words) or a comma list")
    parser.add_argument("--accents", default=",".join(ACCENTS))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma list of espeak-ng variants, or 'all' (every installed one)")
    parser.add_argument("--voices", type=int, default=None,
                        help="keep only this many accent+variant voices (seeded choice)")
    parser.add_argument("--speeds", default="140,180", help="words per minute")
    parser.add_argument("--pitches", default="35,65", help="espeak-ng pitch, 0-99")
    parser.add_argument("--snrs", default="30,20,10", help="noise SNRs in dB, one per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not tools_available():
        print("error: needs espeak-ng and sox: apt-get install espeak-ng sox", file=sys.stderr)
        return 2
    words = (SPEECH_COMMANDS[:int(args.words)] if args.words.isdigit()
             else [w.strip() for w in args.words.split(",") if w.strip()])
    variants = (installed_variants() if args.variants == "all"
                else [v.strip() for v in args.variants.split(",") if v.strip()])
    accents = [a.strip() for a in args.accents.split(",") if a.strip()]
    if args.voices is not None:
        voices = [(a, v) for a in accents for v in variants]
        keep = np.sort(np.random.default_rng([args.seed, 3]).choice(
            len(voices), min(args.voices, len(voices)), replace=False))
        accents = sorted({voices[i][0] for i in keep})
        variants = sorted({voices[i][1] for i in keep})
    jobs = plan(words, accents, variants, [int(s) for s in args.speeds.split(",")],
                [int(p) for p in args.pitches.split(",")],
                [float(s) for s in args.snrs.split(",")], args.seed, args.out)
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(synthesise, jobs, chunksize=32))
    columns = ["path", "label", "voice", "split", "speed", "pitch", "snr_db", "reverb"]
    with open(args.out / "manifest.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        for job in jobs:
            writer.writerow([job["path"], job["word"], job["voice"], job["split"], job["speed"],
                             job["pitch"], job["snr_db"], int(job["reverb"])])
    for name in ("train", "val", "test"):  # one manifest per split, for probekit finetune
        with open(args.out / f"{name}.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            for job in jobs:
                if job["split"] == name:
                    writer.writerow([job["path"], job["word"], job["voice"], name, job["speed"],
                                     job["pitch"], job["snr_db"], int(job["reverb"])])
    counts = {name: sum(job["split"] == name for job in jobs) for name in ("train", "val", "test")}
    hours = sum(result["seconds"] for result in results) / 3600
    print(f"{len(jobs)} clips ({hours:.2f} h of audio) of {len(words)} words by "
          f"{len({job['voice'] for job in jobs})} voices: {counts['train']} train / "
          f"{counts['val']} val / {counts['test']} test, in "
          f"{time.perf_counter() - began:.1f} s -> {args.out / 'manifest.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
