"""What the training loop reads: rows of a tensor, or audio clips from a manifest.

Both datasets expose ``targets`` (numpy: ``(N,)`` class ids, or ``(N, C)`` multi-hot for
multi-label data) and ``classes`` (the class names, in target order), which the loop needs for
its batch sampler and its probes. Audio clips are decoded, resampled to the encoder's rate and
cropped by the dataset; turning a list of waveforms into model inputs is the encoder's
``preprocess`` (see :mod:`tuner.encoders`), applied in the batch collate function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from tuner.finite import check_setting


def encode_targets(label_lists: Sequence[Sequence[str]], classes: Sequence[str] | None = None,
                   *, multi_label: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """Label lists -> targets. Single-label (every list has one label, unless ``multi_label``
    is forced): ``(N,)`` int64 class ids; multi-label: ``(N, C)`` float32 multi-hot.

    ``classes`` fixes the class order (pass the training set's classes when encoding a
    validation or test set); a label outside it is an error. By default the classes are the
    sorted distinct labels.
    """
    if multi_label is None:
        multi_label = any(len(labels) != 1 for labels in label_lists)
    elif not multi_label and any(len(labels) != 1 for labels in label_lists):
        raise ValueError("the training labels are single-label, but some rows here carry "
                         "several labels (or none)")
    if classes is None:
        classes = sorted({label for labels in label_lists for label in labels})
    classes = list(classes)
    position = {name: index for index, name in enumerate(classes)}
    unknown = sorted({label for labels in label_lists for label in labels} - set(position))
    if unknown:
        raise ValueError(f"labels not among the training classes: {', '.join(unknown[:5])}"
                         + (" ..." if len(unknown) > 5 else ""))
    if not multi_label:
        return np.array([position[labels[0]] for labels in label_lists], dtype=np.int64), classes
    hot = np.zeros((len(label_lists), len(classes)), dtype=np.float32)
    for row, labels in enumerate(label_lists):
        hot[row, [position[label] for label in labels]] = 1.0
    return hot, classes


class ArrayDataset(Dataset):
    """Rows of ``inputs`` (a tensor or array, first axis = examples) with their targets.

    ``targets``: ``(N,)`` labels (any kind; encoded to class ids in the order of ``classes``,
    by default the sorted distinct labels) or ``(N, C)`` multi-hot. Pass the training set's
    ``classes`` for a validation set, so that the same label gets the same id (a label outside
    them is an error). Items are ``(inputs[i], target[i])`` tensors.
    """

    def __init__(self, inputs, targets, classes=None):
        self.inputs = torch.as_tensor(np.asarray(inputs) if not torch.is_tensor(inputs)
                                      else inputs)
        if self.inputs.is_floating_point() and self.inputs.dtype == torch.float64:
            self.inputs = self.inputs.float()
        targets = np.asarray(targets)
        if len(targets) != len(self.inputs):
            raise ValueError(f"{len(self.inputs)} inputs but {len(targets)} targets")
        if targets.ndim == 2:
            if classes is not None and len(classes) != targets.shape[1]:
                raise ValueError(f"multi-hot targets have {targets.shape[1]} columns, the "
                                 f"training set {len(classes)} classes")
            self.targets = targets.astype(np.float32)
            self.classes = list(classes) if classes is not None else list(range(targets.shape[1]))
        elif classes is None:
            names, codes = np.unique(targets, return_inverse=True)
            self.targets, self.classes = codes.astype(np.int64), names.tolist()
        else:
            self.classes = list(classes)
            position = {name: index for index, name in enumerate(self.classes)}
            unknown = sorted({str(label) for label in targets.tolist()
                              if label not in position})
            if unknown:
                raise ValueError(f"labels not among the training classes: "
                                 f"{', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
            self.targets = np.array([position[label] for label in targets.tolist()],
                                    dtype=np.int64)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index):
        return self.inputs[index], torch.as_tensor(self.targets[index])


class AudioDataset(Dataset):
    """Audio clips and their targets; items are ``(waveform float32 at sample_rate, target)``.

    Parameters
    ----------
    paths : audio files (anything soundfile reads).
    targets : ``(N,)`` class ids or ``(N, C)`` multi-hot; ``classes`` their names.
    sample_rate : the encoder's rate; files are resampled to it.
    max_seconds : clips longer than this are cropped to it: at a random offset when
        ``random_crop`` (training; seeded by ``(seed, epoch, index)`` so a resumed run sees the
        same crops), else centred.
    cache : keep decoded waveforms in memory after their first load.
    """

    def __init__(self, paths: Sequence[Path], targets: np.ndarray, classes: Sequence[str], *,
                 sample_rate: int, max_seconds: float | None = None, random_crop: bool = False,
                 cache: bool = False, seed: int = 0):
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} audio files but {len(targets)} targets")
        check_crop(max_seconds, sample_rate)
        self.paths, self.targets, self.classes = list(paths), np.asarray(targets), list(classes)
        self.sample_rate, self.max_seconds = int(sample_rate), max_seconds
        self.random_crop, self.seed, self.epoch = random_crop, seed, 0
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    @classmethod
    def from_manifest(cls, manifest: Path, *, sample_rate: int,
                      classes: Sequence[str] | None = None, multi_label: bool | None = None,
                      **options) -> AudioDataset:
        """The clips of a ``path,label`` manifest CSV (see :func:`tuner.audio.read_manifest`);
        pass the training set's ``classes`` (and ``multi_label``) for validation/test sets."""
        from tuner.audio import read_manifest

        paths, label_lists = read_manifest(manifest)
        targets, classes = encode_targets(label_lists, classes, multi_label=multi_label)
        return cls(paths, targets, classes, sample_rate=sample_rate, **options)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        wave = self._cache.get(index) if self._cache is not None else None
        if wave is None:
            from tuner.audio import load_audio

            wave = load_audio(self.paths[index], self.sample_rate)
            if self._cache is not None:
                self._cache[index] = wave
        return self._crop(wave, index), torch.as_tensor(self.targets[index])

    def _crop(self, wave: np.ndarray, index: int) -> np.ndarray:
        if self.max_seconds is None:
            return wave
        length = crop_length(self.max_seconds, self.sample_rate)
        if len(wave) <= length:
            return wave
        if self.random_crop:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            start = int(rng.integers(0, len(wave) - length + 1))
        else:
            start = (len(wave) - length) // 2
        return wave[start:start + length]

    def collate(self, encoder) -> Callable:
        """The DataLoader ``collate_fn``: the encoder's ``preprocess`` on the batch's waveforms."""
        return WaveformCollate(encoder.preprocess)


def crop_length(max_seconds: float, sample_rate: int) -> int:
    """``max(1, round(max_seconds * sample_rate))`` samples."""
    return max(1, int(round(max_seconds * sample_rate)))


def check_crop(max_seconds: float | None, sample_rate: int) -> None:
    """One-line ValueErrors for a crop length that is not a positive finite number of seconds
    (``inf`` or ``nan`` would fail only when the first clip is cropped, as an OverflowError),
    or whose sample count ``max_seconds * sample_rate`` overflows a float."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    if max_seconds is None:
        return
    check_setting("max_seconds", max_seconds, low=0.0, low_open=True)
    if not math.isfinite(float(max_seconds) * sample_rate):
        raise ValueError(f"max_seconds {max_seconds:g} is too large: give a length in seconds "
                         "that fits a clip, or no crop at all")


class WaveformDataset(Dataset):
    """Waveforms held in memory (mono float32 at ``sample_rate``) and their targets; batches go
    through the encoder's ``preprocess`` like :class:`AudioDataset`'s."""

    def __init__(self, waves, targets, classes, *, sample_rate: int):
        if len(waves) != len(targets):
            raise ValueError(f"{len(waves)} waveforms but {len(targets)} targets")
        self.waves, self.targets, self.classes = list(waves), np.asarray(targets), list(classes)
        self.sample_rate = int(sample_rate)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, index):
        return self.waves[index], torch.as_tensor(self.targets[index])

    def collate(self, encoder) -> Callable:
        return WaveformCollate(encoder.preprocess)


class SequenceDataset(Dataset):
    """Variable-length feature sequences (e.g. the cached outputs of a frozen front end) and
    their targets; batches are ``{"frames": (B, T_max, F) zero-padded, "lengths": (B,)}``."""

    def __init__(self, sequences, targets, classes):
        if len(sequences) != len(targets):
            raise ValueError(f"{len(sequences)} sequences but {len(targets)} targets")
        self.sequences, self.targets, self.classes = sequences, np.asarray(targets), list(classes)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index):
        return self.sequences[index], torch.as_tensor(self.targets[index])

    def collate(self, encoder=None) -> Callable:
        return pad_batch


def pad_batch(items):
    """``[(sequence (T_i, F), target), ...] -> ({"frames", "lengths"}, targets)``."""
    sequences, targets = zip(*items, strict=True)
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
    frames = torch.zeros(len(sequences), int(lengths.max()), sequences[0].shape[1])
    for row, sequence in enumerate(sequences):
        frames[row, :len(sequence)] = torch.as_tensor(sequence)
    return {"frames": frames, "lengths": lengths}, torch.stack(list(targets))


class WaveformCollate:
    """``[(waveform, target), ...] -> (preprocess(waveforms), stacked targets)`` (picklable, for
    DataLoader workers)."""

    def __init__(self, preprocess: Callable):
        self.preprocess = preprocess

    def __call__(self, items):
        waves, targets = zip(*items, strict=True)
        return self.preprocess(list(waves)), torch.stack(list(targets))


def collate_for(dataset, encoder) -> Callable | None:
    """The dataset's own collate for this encoder (audio), else None (default collation); a
    ``Subset`` uses its dataset's."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    collate = getattr(dataset, "collate", None)
    return collate(encoder) if collate is not None else None


def dataset_of(data, targets=None, classes=None):
    """A Dataset from a Dataset as given, or from ``(inputs, targets)`` arrays/tensors (targets
    may be None when only embedding: every target is then 0; ``classes`` as in
    :class:`ArrayDataset`)."""
    if isinstance(data, Dataset):
        return data
    if targets is None:
        targets = np.zeros(len(data), dtype=np.int64)
    return ArrayDataset(data, targets, classes)
