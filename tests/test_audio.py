import warnings

import numpy as np
import pytest

from conftest import import_resemblyzer, synthetic_speechlike  # noqa: E402
from tuner.audio import (
    ge2e_mel_frames,
    hz_to_mel,
    load_audio,
    mel_filterbank,
    mel_to_hz,
    normalize_volume,
    read_manifest,
    split_labels,
)

soundfile = pytest.importorskip("soundfile")


def tone(frequency, seconds, sample_rate, amplitude=0.5):
    time = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def peak_frequency(wav, sample_rate):
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return np.argmax(spectrum) * sample_rate / len(wav)


def dbfs(wav):
    rms = np.sqrt(np.mean((np.asarray(wav, dtype=np.float64) * 32767) ** 2))
    return 20 * np.log10(rms / 32767)


# --- load_audio -------------------------------------------------------------------------------

def test_load_audio_mixes_channels_to_mono_by_the_mean(tmp_path):
    left, right = tone(440, 0.25, 16000), tone(1000, 0.25, 16000, amplitude=0.2)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000,
                    subtype="FLOAT")
    wav = load_audio(tmp_path / "stereo.wav", 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize(("file_rate", "channels"), [(22050, 2), (16000, 1), (8000, 1)])
def test_load_audio_resamples_and_keeps_the_pitch(tmp_path, file_rate, channels):
    wav = tone(440, 0.5, file_rate)
    data = np.stack([wav, wav], axis=1) if channels == 2 else wav
    soundfile.write(tmp_path / "tone.wav", data, file_rate, subtype="PCM_16")
    loaded = load_audio(tmp_path / "tone.wav", 16000)
    assert loaded.dtype == np.float32
    assert abs(len(loaded) - round(len(wav) * 16000 / file_rate)) <= 1
    assert abs(peak_frequency(loaded, 16000) - 440) <= 16000 / len(loaded)
    interior = loaded[800:-800]
    assert 0.45 < np.abs(interior).max() < 0.55  # the anti-aliasing filter keeps the level


def test_load_audio_rejects_empty_and_non_audio_files_in_one_line(tmp_path):
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (tmp_path / "zero_bytes.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("this is not audio\nat all\n")
    for name in ("empty.wav", "zero_bytes.wav", "notes.wav"):
        with pytest.raises(ValueError, match=name) as caught:
            load_audio(tmp_path / name, 16000)
        assert "\n" not in str(caught.value)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav", 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(tmp_path / "notes.wav", 0)


# --- read_manifest ----------------------------------------------------------------------------

def write_manifest(path, rows, header="path,label,voice,split"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_read_manifest_resolves_paths_and_splits_labels(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        (audio / name).touch()
    manifest = write_manifest(tmp_path / "meta" / "train.csv", [
        "../audio/a.wav,dog,v1,train",
        f"{audio / 'b.wav'},\" cat ; dog;; \",v2,test",
        "../audio/c.wav,bird;,v1,train",
        ",,,",
    ])
    paths, labels = read_manifest(manifest)
    assert paths == [audio.resolve() / "a.wav", audio / "b.wav", audio.resolve() / "c.wav"]
    assert all(path.is_absolute() and path.is_file() for path in paths)
    assert labels == [["dog"], ["cat", "dog"], ["bird"]]
    assert split_labels(" x ;y; ;") == ["x", "y"]


def test_read_manifest_errors_are_one_line_and_specific(tmp_path):
    (tmp_path / "a.wav").touch()
    cases = {
        "no_label_column.csv": (["a.wav,x"], "path,voice", "label"),
        "empty.csv": ([], "path,label", "no audio files"),
        "blank_label.csv": (["a.wav,dog", "a.wav, ; "], "path,label",
                            r"line 3 \(a.wav\): no label"),
        "missing.csv": ([f"m{i}.wav,x" for i in range(5)] + ["a.wav,y"], "path,label",
                        r"5 audio file\(s\) missing: .*m0.wav, .*m1.wav, .*m2.wav and 2 more"),
    }
    for name, (rows, header, message) in cases.items():
        manifest = write_manifest(tmp_path / name, rows, header)
        with pytest.raises(ValueError, match=message) as caught:
            read_manifest(manifest)
        assert "\n" not in str(caught.value)
    (tmp_path / "header_only.csv").write_text("")
    with pytest.raises(ValueError, match="lacks column"):
        read_manifest(tmp_path / "header_only.csv")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "absent.csv")


# --- normalize_volume -------------------------------------------------------------------------

def test_normalize_volume_reaches_the_target_and_leaves_loud_audio_and_silence():
    quiet = synthetic_speechlike(8000, seed=0, amplitude=0.01)
    louder = normalize_volume(quiet)
    assert louder.dtype == np.float32
    assert dbfs(louder) == pytest.approx(-30.0, abs=1e-4)
    loud = tone(440, 0.5, 16000, amplitude=0.5)
    assert np.array_equal(normalize_volume(loud), loud)
    assert dbfs(normalize_volume(loud, increase_only=False)) == pytest.approx(-30.0, abs=1e-4)
    assert dbfs(normalize_volume(quiet, target_dbfs=-20.0)) == pytest.approx(-20.0, abs=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silence = np.zeros(1600, dtype=np.float32)
        assert np.array_equal(normalize_volume(silence), silence)
        assert normalize_volume(np.zeros(0, dtype=np.float32)).size == 0


def test_normalize_volume_matches_resemblyzer():
    resemblyzer = import_resemblyzer()
    wav = synthetic_speechlike(16000, seed=1)
    expected = resemblyzer.normalize_volume(wav, -30, increase_only=True)
    np.testing.assert_allclose(normalize_volume(wav), expected, rtol=1e-5, atol=1e-7)


# --- mel features -----------------------------------------------------------------------------

def test_slaney_mel_scale_matches_librosa_and_inverts():
    librosa = pytest.importorskip("librosa")
    frequencies = np.array([0.0, 100.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0])
    np.testing.assert_allclose(hz_to_mel(frequencies), librosa.hz_to_mel(frequencies),
                               rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(frequencies)), frequencies, atol=1e-9)


@pytest.mark.parametrize(("sample_rate", "n_fft", "n_mels", "fmin", "fmax"), [
    (16000, 400, 40, 0.0, None),
    (22050, 2048, 128, 0.0, None),
    (16000, 512, 64, 50.0, 7000.0),
    (8000, 256, 20, 300.0, 3000.0),
])
def test_mel_filterbank_matches_librosa(sample_rate, n_fft, n_mels, fmin, fmax):
    librosa = pytest.importorskip("librosa")
    filters = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                   fmax=fmax)
    assert filters.shape == (n_mels, n_fft // 2 + 1) and filters.dtype == np.float32
    np.testing.assert_allclose(filters, expected, atol=1e-6)


def test_mel_filterbank_rejects_bad_ranges():
    with pytest.raises(ValueError, match="fmin"):
        mel_filterbank(16000, 400, 40, fmin=9000.0)


@pytest.mark.filterwarnings("ignore:n_fft=400 is too large")
@pytest.mark.parametrize(("n_samples", "seed"), [(16000, 0), (25637, 1), (300, 2)])
def test_ge2e_mel_frames_match_resemblyzer(n_samples, seed):
    resemblyzer = import_resemblyzer()
    wav = normalize_volume(synthetic_speechlike(n_samples, seed))
    frames = ge2e_mel_frames(wav)
    expected = resemblyzer.audio.wav_to_mel_spectrogram(wav)
    assert frames.dtype == np.float32
    assert frames.shape == expected.shape == (1 + n_samples // 160, 40)
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-4 * expected.max())


def test_ge2e_mel_frames_of_tiny_waveforms_have_one_frame():
    assert ge2e_mel_frames(np.zeros(0, dtype=np.float32)).shape == (1, 40)
    assert ge2e_mel_frames(np.ones(10, dtype=np.float32)).shape == (1, 40)
    with pytest.raises(ValueError, match="1-D"):
        ge2e_mel_frames(np.zeros((2, 400), dtype=np.float32))
