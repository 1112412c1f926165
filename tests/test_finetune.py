"""`probekit finetune` / `probekit embed`: audio manifests -> a pre-trained encoder -> tuned
embeddings that `probekit evaluate` reads, through the real training loop.

On the CPU, also on a machine with GPUs: every command gets ``--device cpu`` and the torchrun
run an empty ``CUDA_VISIBLE_DEVICES``."""

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
soundfile = pytest.importorskip("soundfile")

from click.testing import CliRunner  # noqa: E402

from probekit.cli import cli  # noqa: E402
from tuner.data import AudioDataset, encode_targets  # noqa: E402
from tuner.embed import embed  # noqa: E402
from tuner.encoders import GE2EEncoder  # noqa: E402

needs_ge2e = pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                                reason="the GE2E weights ship in the resemblyzer wheel")


def write_clips(folder, name, per_class, seed, rate=22050):
    """Three 'words' (a chirp, a two-tone chord, a noise burst) at random levels and offsets,
    written as WAV files at 22.05 kHz (so loading resamples them), and a path,label manifest."""
    rng = np.random.default_rng(seed)
    rows = ["path,label,voice"]
    folder.mkdir(exist_ok=True)
    for word in ("chirp", "chord", "burst"):
        for index in range(per_class):
            length = int(rate * rng.uniform(0.4, 0.7))
            t = np.arange(length) / rate
            if word == "chirp":
                wave = np.sin(2 * np.pi * (300 + 900 * t) * t)
            elif word == "chord":
                wave = np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 660 * t)
            else:
                wave = rng.normal(size=length) * np.hanning(length)
            wave = rng.uniform(0.05, 0.3) * wave + 0.01 * rng.normal(size=length)
            path = folder / f"{name}_{word}_{index}.wav"
            soundfile.write(path, wave.astype(np.float32), rate)
            rows.append(f"{path.name},{word},v{index % 2}")
    manifest = folder / f"{name}.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {name: write_clips(folder, name, per_class, seed)
            for name, per_class, seed in [("train", 8, 0), ("val", 4, 1), ("test", 4, 2)]}


def test_audio_dataset_reads_resamples_and_crops(clips):
    data = AudioDataset.from_manifest(clips["train"], sample_rate=16000, max_seconds=0.25,
                                      random_crop=True, seed=3)
    assert data.classes == ["burst", "chirp", "chord"] and data.targets.shape == (24,)
    wave, target = data[0]
    assert wave.dtype == np.float32 and len(wave) == 4000 and int(target) == data.targets[0]
    again, _ = data[0]
    np.testing.assert_array_equal(wave, again)  # the crop is seeded by (seed, epoch, index)
    data.set_epoch(1)
    assert not np.array_equal(data[0][0], wave)
    full = AudioDataset.from_manifest(clips["train"], sample_rate=16000)
    assert 0.4 * 16000 - 1 <= len(full[0][0]) <= 0.7 * 16000 + 1
    with pytest.raises(ValueError, match="not among the training classes"):
        encode_targets([["chirp"], ["sneeze"]], classes=data.classes)
    hot, classes = encode_targets([["a", "b"], ["b"]])
    np.testing.assert_array_equal(hot, [[1, 1], [0, 1]])
    assert classes == ["a", "b"]


def test_embed_keeps_order_and_train_mode():
    encoder = GE2EEncoder()
    encoder.train()
    waves = AudioDatasetLike([np.sin(np.arange(n) / 7).astype(np.float32)
                              for n in (3000, 5000, 4000)])
    rows = embed(encoder, waves, batch_size=2, device="cpu")
    assert rows.shape == (3, 256) and rows.dtype == np.float32 and encoder.training
    with torch.no_grad():
        encoder.eval()
        expected = [encoder(**encoder.preprocess([w])).numpy()[0] for w in waves.waves]
    np.testing.assert_allclose(rows, np.stack(expected), atol=1e-5)


class AudioDatasetLike(AudioDataset):
    """Waveforms held in memory, with the audio collate of AudioDataset."""

    def __init__(self, waves):
        super().__init__([f"w{i}" for i in range(len(waves))], np.zeros(len(waves), np.int64),
                         ["x"], sample_rate=16000)
        self.waves = waves

    def __getitem__(self, index):
        return self.waves[index], torch.tensor(0)


@pytest.mark.slow
@needs_ge2e
def test_finetune_then_evaluate_end_to_end(clips, tmp_path):
    runner = CliRunner()
    base = runner.invoke(cli, ["embed", str(clips["train"]), str(clips["test"]), "--encoder",
                               "ge2e", "--device", "cpu", "--out", str(tmp_path / "base"),
                               "-q"])
    assert base.exit_code == 0, (base.output, base.exception)
    assert np.load(tmp_path / "base" / "test.npy").shape == (12, 256)

    out = tmp_path / "tuned"
    result = runner.invoke(cli, [
        "finetune", str(clips["train"]), "--val", str(clips["val"]), "--embed",
        str(clips["test"]), "--encoder", "ge2e", "--epochs", "2", "--batch-size", "12",
        "--m", "4", "--lr", "1e-3", "--max-seconds", "0.5", "--device", "cpu", "--out",
        str(out), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    log = json.loads((out / "log.json").read_text())
    assert [record["epoch"] for record in log["epochs"]] == [1, 2]
    assert log["best"]["metric"] == "knn_weighted@20"
    assert log["best"]["score"] == max(r["probe"]["knn_weighted@20"] for r in log["epochs"])
    for name in ("train", "val", "test"):
        assert np.load(out / f"{name}.npy").shape[1] == 256
        assert len((out / f"{name}.labels.txt").read_text().split()) == len(
            np.load(out / f"{name}.npy"))
    evaluated = runner.invoke(cli, [
        "evaluate", str(out / "train.npy"), str(out / "train.labels.txt"),
        "--test-embeddings", str(out / "test.npy"), "--test-labels",
        str(out / "test.labels.txt"), "--k", "1,5", "--no-geometry", "-q"])
    assert evaluated.exit_code == 0, (evaluated.output, evaluated.exception)
    assert "| linear |" in evaluated.output


@pytest.mark.slow
@needs_ge2e
def test_finetune_probes_choose_the_checkpoint_that_embed_reloads(clips, tmp_path):
    runner = CliRunner()
    out = tmp_path / "tuned"
    result = runner.invoke(cli, [
        "finetune", str(clips["train"]), "--val", str(clips["val"]), "--encoder", "ge2e",
        "--epochs", "2", "--batch-size", "12", "--m", "4", "--lr", "1e-3",
        "--probe-metric", "knn_weighted@5", "--device", "cpu", "--out", str(out), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    log = json.loads((out / "log.json").read_text())
    scores = [record["probe"]["knn_weighted@5"] for record in log["epochs"]]
    assert log["best"]["score"] == max(scores)
    again = runner.invoke(cli, ["embed", str(clips["val"]), "--encoder", "ge2e", "--checkpoint",
                                str(out / "best.pt"), "--device", "cpu", "--out",
                                str(tmp_path / "again"), "-q"])
    assert again.exit_code == 0, (again.output, again.exception)
    np.testing.assert_allclose(np.load(tmp_path / "again" / "val.npy"),
                               np.load(out / "val.npy"), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("wav2vec2")
    _save_tiny_wav2vec2(folder)
    return folder


def _save_tiny_wav2vec2(folder):
    """A tiny randomly initialised wav2vec2 and its feature extractor, saved like a download."""
    import transformers

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
        do_stable_layer_norm=True)
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)


@pytest.mark.slow
def test_finetune_hugging_face_encoder_from_a_local_directory(clips, tiny_wav2vec2, tmp_path):
    result = CliRunner().invoke(cli, [
        "finetune", str(clips["train"]), "--encoder", f"hf:{tiny_wav2vec2}",
        "--objective", "ce", "--epochs", "1", "--batch-size", "8", "--train-last", "1",
        "--device", "cpu", "--out", str(tmp_path / "tuned"), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stderr == ""  # no loading bars from transformers
    assert np.load(tmp_path / "tuned" / "train.npy").shape == (24, 32)
    assert (tmp_path / "tuned" / "last.pt").exists()


@pytest.mark.slow
def test_finetune_and_embed_bad_input_is_one_line(clips, tmp_path):
    runner = CliRunner()
    bad_manifest = tmp_path / "bad.csv"
    bad_manifest.write_text("file,label\na.wav,x\n")
    (tmp_path / "sub").mkdir()
    clash = tmp_path / "sub" / "train.csv"
    clash.write_text(clips["val"].read_text().replace("val_", str(clips["val"].parent) + "/val_"))
    cases = [
        ["finetune", str(clips["train"]), "--embed", str(clash), "--epochs", "50", "--out",
         str(tmp_path / "g")],
        ["finetune", str(clips["train"]), "--train-last", "5", "--out", str(tmp_path / "h")],
        ["finetune", str(clips["train"]), "--encoder", "wav2vec", "--out", str(tmp_path / "a")],
        ["finetune", str(bad_manifest), "--encoder", "ge2e", "--out", str(tmp_path / "b")],
        ["finetune", str(clips["train"]), "--probe-metric", "f1", "--out", str(tmp_path / "c")],
        ["embed", str(clips["train"]), "--encoder", "hf:" + str(tmp_path / "nowhere"),
         "--out", str(tmp_path / "d")],
        ["embed", str(clips["train"]), str(clips["train"]), "--out", str(tmp_path / "e")],
    ]
    if importlib.util.find_spec("resemblyzer") is not None:
        plain = tmp_path / "plain.pt"
        torch.save({"weight": torch.zeros(2)}, plain)
        cases.append(["embed", str(clips["val"]), "--checkpoint", str(plain), "--out",
                      str(tmp_path / "f")])
    if importlib.util.find_spec("transformers") is not None:
        short = tmp_path / "short.wav"
        soundfile.write(short, np.zeros(50, dtype=np.float32), 16000)
        (tmp_path / "short.csv").write_text("path,label\nshort.wav,x\n")
        model = tmp_path / "w2v"
        _save_tiny_wav2vec2(model)
        cases.append(["embed", str(tmp_path / "short.csv"), "--encoder", f"hf:{model}",
                      "--out", str(tmp_path / "i")])
    for args in cases:
        result = runner.invoke(cli, [*args, "--device", "cpu"])
        assert result.exit_code == 2, (args, result.output, result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, result.stderr)


@pytest.mark.slow
@needs_ge2e
def test_finetune_under_torchrun_with_two_processes_matches_one_process(clips, tmp_path):
    """The real launcher: 2 CPU processes (gloo) split each global batch of 12; the logged
    losses equal a single process's on the same batches. (No GPU is visible to them: with
    one, the CLI would start an NCCL group, and two ranks could share one GPU.)"""
    import os
    import subprocess
    import sys

    common = [str(clips["train"]), "--val", str(clips["val"]), "--epochs", "2",
              "--batch-size", "12", "--lr", "1e-3", "--probe-every", "0", "--device", "cpu",
              "-q"]
    single = CliRunner().invoke(cli, ["finetune", *common, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, (single.output, single.exception)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--standalone", "-m", "probekit", "finetune", *common,
         "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=120, env=environment)
    assert run.returncode == 0, run.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "log.json").read_text())["epochs"]
    two = json.loads((tmp_path / "two" / "log.json").read_text())["epochs"]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)
    # the losses agree to 2.5e-7 (above); the embeddings after two epochs of Adam, which
    # enlarges the rounding of matrix products of other shapes (6 rows per rank, not 12), to
    # 7.5e-5 on AVX-512 kernels: 1e-3 still tells them from a wrong run (a seed moves them 0.27)
    np.testing.assert_allclose(np.load(tmp_path / "two" / "val.npy"),
                               np.load(tmp_path / "one" / "val.npy"), atol=1e-3)
