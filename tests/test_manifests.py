"""Manifest builders for ESC-50, Speech Commands v2 and FSD50K, on tiny stand-ins written in each
data set's own layout and metadata format."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
soundfile = pytest.importorskip("soundfile")

from probekit.cli import cli  # noqa: E402
from tuner.audio import read_manifest  # noqa: E402
from tuner.manifests import esc50, fsd50k, speech_commands  # noqa: E402


def wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(160, dtype=np.float32), 16000)


def rows(path):
    return list(csv.DictReader(open(path)))


def test_esc50_five_folds(tmp_path):
    root = tmp_path / "ESC-50-master"
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for index in range(10):
        name = f"{index % 5 + 1}-{index}-A-{index % 2}.wav"
        lines.append(f"{name},{index % 5 + 1},{index % 2},{'dog' if index % 2 else 'rain'},"
                     f"False,{index},A")
        wav(root / "audio" / name)
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    counts = esc50(root, tmp_path / "out")
    assert counts["fold1_train.csv"] == 8 and counts["fold1_test.csv"] == 2
    assert len(counts) == 10
    paths, labels = read_manifest(tmp_path / "out" / "fold3_test.csv")
    assert all(path.is_file() for path in paths) and sorted(sum(labels, [])) == ["dog", "rain"]
    train = {r["path"] for r in rows(tmp_path / "out" / "fold3_train.csv")}
    assert not train & {str(p) for p in paths}


def test_speech_commands_official_lists(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    for word in ("yes", "no"):
        for index in range(4):
            wav(root / word / f"{index:08x}_nohash_0.wav")
    wav(root / "_background_noise_" / "white_noise.wav")
    (root / "validation_list.txt").write_text(
        "yes/00000001_nohash_0.wav\nno/00000001_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/00000002_nohash_0.wav\n")
    counts = speech_commands(root, tmp_path / "out")
    assert counts == {"train.csv": 5, "val.csv": 2, "test.csv": 1}
    test = rows(tmp_path / "out" / "test.csv")
    assert test[0]["label"] == "yes" and test[0]["path"].endswith("yes/00000002_nohash_0.wav")
    assert not any("_background_noise_" in r["path"] for r in rows(tmp_path / "out" / "train.csv"))


def test_fsd50k_multilabel_splits(tmp_path):
    root = tmp_path / "FSD50K"
    truth = root / "FSD50K.ground_truth"
    truth.mkdir(parents=True)
    (truth / "dev.csv").write_text('fname,labels,mids,split\n1,"Dog,Animal","/m/a,/m/b",train\n'
                                   '2,Rain,/m/c,val\n3,"Speech,Human_voice","/m/d,/m/e",train\n')
    (truth / "eval.csv").write_text('fname,labels,mids\n9,"Rain,Water","/m/c,/m/f"\n')
    for name in ("1", "2", "3"):
        wav(root / "FSD50K.dev_audio" / f"{name}.wav")
    wav(root / "FSD50K.eval_audio" / "9.wav")
    counts = fsd50k(root, tmp_path / "out")
    assert counts == {"train.csv": 2, "val.csv": 1, "test.csv": 1}
    paths, labels = read_manifest(tmp_path / "out" / "test.csv")
    assert labels == [["Rain", "Water"]]
    runner = CliRunner()
    result = runner.invoke(cli, ["manifest", "fsd50k", str(root), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 0 and "train.csv: 2 clips" in result.output
    (root / "FSD50K.eval_audio" / "9.wav").unlink()
    missing = runner.invoke(cli, ["manifest", "fsd50k", str(root), "--out", str(tmp_path / "o3")])
    assert missing.exit_code == 2 and "missing" in missing.stderr
    nothing = runner.invoke(cli, ["manifest", "esc50", str(tmp_path), "--out", str(tmp_path / "x")])
    assert nothing.exit_code == 2 and "metadata file not found" in nothing.stderr
