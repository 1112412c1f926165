"""Audio input for the pre-trained encoders: reading files and manifests, volume normalisation
and the 40-band mel frames of the GE2E speaker encoder.

Small pure functions on numpy arrays. ``soundfile`` is imported where a file is read (extra
``audio``); the features are plain numpy, written from their formulas and tested against
librosa and Resemblyzer (which are reference libraries for the tests only).
"""

from __future__ import annotations

import csv
from math import gcd
from os import PathLike
from pathlib import Path

import numpy as np

from tuner.finite import check_waveform

INT16_MAX = 2**15 - 1
GE2E_N_MELS = 40
GE2E_WINDOW_MS = 25
GE2E_HOP_MS = 10
_SHOWN_MISSING = 3

# Slaney's mel scale (Auditory Toolbox; librosa's default, htk=False): linear below 1 kHz with
# 3 mel per 200 Hz, logarithmic above with 27 mel per factor 6.4.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def _import_soundfile():
    try:
        import soundfile
    except ImportError as error:
        raise ImportError(
            "reading audio files needs soundfile: pip install 'probekit[audio]'") from error
    return soundfile


def load_audio(path: str | PathLike, sample_rate: int) -> np.ndarray:
    """Read an audio file as a mono float32 waveform at ``sample_rate``.

    Channels are mixed to mono by their mean; a file at another rate is resampled with a
    polyphase filter, ``scipy.signal.resample_poly(x, up, down)`` where
    ``up / down = sample_rate / file_rate`` reduced by their gcd, so the output has
    ``ceil(n * up / down)`` samples.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file cannot be decoded by libsndfile, holds no samples, or holds NaN, infinite or
        absurdly large samples (:func:`tuner.finite.check_waveform`: float WAVs can hold any
        float; such a clip would turn the loss and every trained weight into NaN).
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    sample_rate = int(sample_rate)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    soundfile = _import_soundfile()
    try:
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"cannot read audio file {path}: {reason}") from None
    if samples.size == 0:
        raise ValueError(f"audio file {path} holds no samples")
    check_waveform(samples, f"audio file {path}")
    mono = samples.mean(axis=1, dtype=np.float32)
    if file_rate != sample_rate:
        from scipy.signal import resample_poly

        divisor = gcd(sample_rate, int(file_rate))
        mono = resample_poly(mono, sample_rate // divisor, int(file_rate) // divisor)
    return np.ascontiguousarray(mono, dtype=np.float32)


def read_manifest(path: str | PathLike) -> tuple[list[Path], list[list[str]]]:
    """Read a CSV manifest of audio files and their labels.

    The header names at least ``path`` and ``label`` (other columns, e.g. ``voice`` or
    ``split``, are ignored). One cell may hold several labels separated by ``;`` (parts are
    stripped, empty parts dropped). Relative paths are resolved against the manifest's folder.

    Returns
    -------
    paths : list of Path
        Absolute paths of the audio files, in manifest order; every one exists.
    labels : list of list of str
        The labels of each file (at least one).

    Raises
    ------
    FileNotFoundError
        The manifest does not exist.
    ValueError
        A missing column, path or label, missing audio files, or a file the ``csv`` module
        cannot parse (a cell over its field limit of 131,072 characters, a NUL byte, ...).
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    header, rows = _read_rows(manifest)
    missing_columns = [name for name in ("path", "label") if name not in header]
    if missing_columns:
        raise ValueError(f"manifest {manifest} lacks column(s) {', '.join(missing_columns)} "
                         f"(header: {', '.join(header) or 'empty'})")
    if not rows:
        raise ValueError(f"manifest {manifest} lists no audio files")
    path_column, label_column = header.index("path"), header.index("label")
    folder = manifest.resolve().parent
    paths, labels = [], []
    for line, row in rows:
        cells = row + [""] * (len(header) - len(row))
        file_cell, label_cell = cells[path_column].strip(), cells[label_column]
        if not file_cell:
            raise ValueError(f"manifest {manifest} line {line}: empty path")
        row_labels = split_labels(label_cell)
        if not row_labels:
            raise ValueError(f"manifest {manifest} line {line} ({file_cell}): no label")
        file_path = Path(file_cell).expanduser()
        paths.append(file_path if file_path.is_absolute() else (folder / file_path).resolve())
        labels.append(row_labels)
    missing_files = [str(file_path) for file_path in paths if not file_path.is_file()]
    if missing_files:
        shown = ", ".join(missing_files[:_SHOWN_MISSING])
        more = (f" and {len(missing_files) - _SHOWN_MISSING} more"
                if len(missing_files) > _SHOWN_MISSING else "")
        raise ValueError(f"manifest {manifest}: {len(missing_files)} audio file(s) missing: "
                         f"{shown}{more}")
    return paths, labels


def _read_rows(manifest: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The stripped header and the non-blank rows (with their line numbers) of a CSV file;
    ``csv.Error`` becomes a one-line ValueError naming the file and the line."""
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader
                    if any(cell.strip() for cell in row)]
        except csv.Error as error:
            raise ValueError(f"manifest {manifest} line {reader.line_num}: cannot be read as "
                             f"CSV: {csv_error_reason(error)}") from None
    return header, rows


def csv_error_reason(error: csv.Error) -> str:
    """One line on a ``csv.Error``; the field-limit error says what the limit is for."""
    reason = " ".join(str(error).split())
    if "field larger than field limit" in reason:
        reason = (f"a cell is longer than {csv.field_size_limit():,} characters, the csv "
                  "module's field limit (a cell holds one path, name or list of labels)")
    return reason


def split_labels(cell: str, separator: str = ";") -> list[str]:
    """The labels of one manifest cell: split at ``separator``, stripped, empty parts dropped."""
    return [part.strip() for part in cell.split(separator) if part.strip()]


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0,
                     increase_only: bool = True) -> np.ndarray:
    """Scale a waveform in [-1, 1] to a target loudness, as Resemblyzer's preprocessing.

    ``rms = sqrt(mean((32767 * wav)^2))``, ``dBFS = 20 log10(rms / 32767)``; the waveform is
    multiplied by ``10^((target_dbfs - dBFS) / 20)``. With ``increase_only`` a waveform louder
    than the target is returned unchanged; so is silence (rms 0) and an empty waveform.
    The dtype of a floating input is kept (float32 otherwise).

    References
    ----------
    Resemblyzer ``resemblyzer/audio.py:normalize_volume`` (audio_norm_target_dBFS = -30).
    """
    wav = np.asarray(wav)
    dtype = wav.dtype if np.issubdtype(wav.dtype, np.floating) else np.dtype(np.float32)
    wav = wav.astype(dtype, copy=False)
    if wav.size == 0:
        return wav
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) * INT16_MAX
    if rms == 0.0 or not np.isfinite(rms):
        return wav
    change_db = target_dbfs - 20.0 * np.log10(rms / INT16_MAX)
    if increase_only and change_db < 0:
        return wav
    return (wav * 10.0 ** (change_db / 20.0)).astype(dtype, copy=False)


def hz_to_mel(frequencies: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: ``f / (200/3)`` below 1 kHz, ``15 + 27 ln(f / 1000) / ln 6.4``
    above (Slaney, Auditory Toolbox, 1998; librosa ``hz_to_mel(htk=False)``)."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    linear = frequencies / _SLANEY_HZ_PER_MEL
    safe = np.maximum(frequencies, _SLANEY_BREAK_HZ)
    logarithmic = _SLANEY_BREAK_MEL + np.log(safe / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(frequencies >= _SLANEY_BREAK_HZ, logarithmic, linear)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`: ``(200/3) m`` below 15 mel,
    ``1000 exp(ln 6.4 (m - 15) / 27)`` above."""
    mels = np.asarray(mels, dtype=np.float64)
    linear = mels * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mels - _SLANEY_BREAK_MEL))
    return np.where(mels >= _SLANEY_BREAK_MEL, logarithmic, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters with Slaney's area normalisation, (n_mels, n_fft // 2 + 1) float32.

    Band edges ``f_0 < ... < f_{n_mels+1}`` are equally spaced on :func:`hz_to_mel` between
    ``fmin`` and ``fmax`` (default ``sample_rate / 2``); filter ``m`` at FFT bin frequency ``f``
    is ``max(0, min((f - f_m) / (f_{m+1} - f_m), (f_{m+2} - f) / (f_{m+2} - f_{m+1})))``,
    scaled by ``2 / (f_{m+2} - f_m)`` so that every filter has unit area (norm='slaney').

    References
    ----------
    M. Slaney, Auditory Toolbox, version 2, Interval Research Corporation, 1998 (``MakeMelFB``);
    librosa ``filters.mel(htk=False, norm='slaney')``, which this equals.
    """
    if n_fft <= 0 or n_mels <= 0 or sample_rate <= 0:
        raise ValueError("sample_rate, n_fft and n_mels must be positive")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax:
        raise ValueError(f"need 0 <= fmin < fmax, got fmin={fmin}, fmax={fmax}")
    bin_frequencies = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    offsets = edges[:, None] - bin_frequencies[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    area_scale = 2.0 / (edges[2:] - edges[:-2])
    return (triangles * area_scale[:, None]).astype(np.float32)


def power_spectrogram(wav: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT|^2 of centred frames, (T, n_fft // 2 + 1) float64, T = 1 + len(wav) // hop_length.

    The waveform is zero-padded by ``n_fft // 2`` on both sides, cut into frames of ``n_fft``
    every ``hop_length`` samples, weighted by the periodic Hann window
    ``w[n] = 0.5 - 0.5 cos(2 pi n / n_fft)`` and transformed with the real FFT (librosa
    ``stft(center=True, pad_mode='constant', window='hann')``).
    """
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"waveform must be 1-D, got shape {wav.shape}")
    padded = np.pad(wav, n_fft // 2)
    if padded.size < n_fft:
        padded = np.pad(padded, (0, n_fft - padded.size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(frames * window, axis=1)) ** 2


def ge2e_mel_frames(wav: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """The input of the GE2E speaker encoder: a power mel spectrogram, (T, 40) float32, not log.

    25 ms periodic-Hann windows every 10 ms (400 / 160 samples at 16 kHz), centred with zero
    padding, so ``T = 1 + len(wav) // hop`` (at least one frame), power 2, 40 Slaney mel bands
    from 0 Hz to ``sample_rate / 2`` with Slaney area normalisation.

    References
    ----------
    Wan et al., "Generalized End-to-End Loss for Speaker Verification", ICASSP 2018;
    Resemblyzer ``audio.wav_to_mel_spectrogram`` (librosa ``feature.melspectrogram``), which
    this equals.
    """
    n_fft = int(sample_rate * GE2E_WINDOW_MS / 1000)
    hop_length = int(sample_rate * GE2E_HOP_MS / 1000)
    power = power_spectrogram(wav, n_fft, hop_length)
    filters = mel_filterbank(sample_rate, n_fft, GE2E_N_MELS).astype(np.float64)
    return (power @ filters.T).astype(np.float32)
