"""The demo data shipped inside probekit (src/probekit/demo_data/) and the script that makes it
(examples/spoken_words/make_demo_data.py).

The fast test reads the shipped file. The slow one runs the script end to end in --quick mode,
twice, and is skipped where espeak-ng and sox (apt-get install espeak-ng sox), torch or the
GE2E weights of the Resemblyzer wheel are missing."""

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "spoken_words" / "make_demo_data.py"
SHIPPED = ROOT / "src" / "probekit" / "demo_data"
KEYS = {"frozen_train", "frozen_test", "supcon_train", "supcon_test", "train_labels",
        "test_labels", "train_voices", "test_voices"}


def check_demo_file(path: Path) -> dict:
    """The file's arrays, read without pickle, with their keys, dtypes, shapes and values
    checked."""
    with np.load(path, allow_pickle=False) as stored:  # an object array would raise here
        arrays = {key: stored[key] for key in stored.files}
    assert set(arrays) == KEYS
    assert not any(array.dtype.hasobject for array in arrays.values())
    for split in ("train", "test"):
        labels, voices = arrays[f"{split}_labels"], arrays[f"{split}_voices"]
        n = len(labels)
        assert n > 0 and labels.dtype.kind == "U" and labels.shape == (n,)
        assert voices.dtype.kind == "U" and voices.shape == (n,)
        assert all("+" in voice for voice in voices.tolist())  # accent+variant
        for space in ("frozen", "supcon"):
            matrix = arrays[f"{space}_{split}"]
            assert matrix.dtype == np.float16 and matrix.shape == (n, 256)
            assert np.isfinite(matrix).all()
            norms = np.linalg.norm(matrix.astype(np.float32), axis=1)
            np.testing.assert_allclose(norms, 1.0, atol=1e-2)  # L2-normalised embeddings
        assert not np.array_equal(arrays[f"frozen_{split}"], arrays[f"supcon_{split}"])
    assert set(arrays["train_labels"].tolist()) == set(arrays["test_labels"].tolist())
    assert not set(arrays["train_voices"].tolist()) & set(arrays["test_voices"].tolist())
    _, per_word = np.unique(arrays["train_labels"], return_counts=True)
    assert per_word.min() == per_word.max()  # stratified by word
    return arrays


def card_sha256(card: Path) -> str:
    found = re.findall(r"SHA-256 of `spoken_words\.npz`: `([0-9a-f]{64})`", card.read_text())
    assert len(found) == 1, "DATA_CARD.md must state the file's SHA-256 once"
    return found[0]


def test_shipped_demo_data_matches_its_card():
    path, card = SHIPPED / "spoken_words.npz", SHIPPED / "DATA_CARD.md"
    arrays = check_demo_file(path)
    assert path.stat().st_size < 4.5e6
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card_sha256(card)
    text = card.read_text()
    assert "--quick" not in text  # the shipped file is the full build
    for key in ("frozen_train", "frozen_test", "supcon_train", "supcon_test"):
        assert f"| `{key}` | float16 | {len(arrays[key])} × 256 |" in text
    assert len(set(arrays["train_labels"].tolist())) == 35
    assert len(set(arrays["test_voices"].tolist())) == 19  # every held-out voice
    assert len(arrays["test_labels"]) == 1330  # the whole test split


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="needs Debian's espeak-ng and sox")
@pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None or
                    importlib.util.find_spec("torch") is None,
                    reason="needs torch and the GE2E weights of the resemblyzer wheel")
def test_quick_build_is_complete_and_reproducible(tmp_path):
    common = [sys.executable, str(SCRIPT), "--quick", "--steps", "10", "--per-word", "10"]
    first = subprocess.run(common + ["--out", str(tmp_path / "a"), "--work",
                                     str(tmp_path / "work")],
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    arrays = check_demo_file(tmp_path / "a" / "spoken_words.npz")
    assert len(arrays["train_labels"]) == 10 * 10  # 10 words, 10 rows each
    assert len(arrays["test_labels"]) == 140  # the whole test split of the quick data
    card = tmp_path / "a" / "DATA_CARD.md"
    content = (tmp_path / "a" / "spoken_words.npz").read_bytes()
    assert hashlib.sha256(content).hexdigest() == card_sha256(card)
    assert "This is a `--quick` build" in card.read_text()
    assert "--quick --steps 10 --per-word 10" in card.read_text()
    # the same command on the same synthesised data gives the same bytes
    again = subprocess.run(common + ["--out", str(tmp_path / "b"), "--data",
                                     str(tmp_path / "work" / "data")],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "b" / "spoken_words.npz").read_bytes() == content


def test_script_refuses_a_folder_without_manifest(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch")
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"),
                          "--data", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2 and "no manifest.csv" in run.stderr
    assert not (tmp_path / "out").exists()


def test_stratified_rows_are_seeded_and_balanced():
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    labels = np.array(["yes"] * 30 + ["no"] * 5 + ["up"] * 12)
    rows = module.stratified_rows(labels, 10, seed=0)
    assert (np.diff(rows) > 0).all()
    words, counts = np.unique(labels[rows], return_counts=True)
    assert dict(zip(words.tolist(), counts.tolist(), strict=True)) == {"yes": 10, "no": 5,
                                                                        "up": 10}
    assert (rows == module.stratified_rows(labels, 10, seed=0)).all()
    assert not (rows == module.stratified_rows(labels, 10, seed=1)).all()
