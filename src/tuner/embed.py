"""Stage two starts here: embeddings of a dataset as a numpy matrix that probekit reads.

``embed(encoder, data)`` runs the encoder in evaluation mode, without gradients, in batches,
on the GPU when there is one (bf16 autocast there unless ``amp=False``), and returns float32
rows in the order of ``data``. ``np.save`` them and run ``probekit evaluate``, or pass them to
``probekit.dual_probe``. Embeddings are always finite: a NaN or infinite row is an error
(:class:`tuner.finite.NonFiniteError`, naming the rows and, for audio, their files), never an
output.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from tuner.data import collate_for, dataset_of
from tuner.distributed import select_device
from tuner.finite import NonFiniteError, describe_rows, nonfinite_rows


def encode(encoder: torch.nn.Module, inputs) -> torch.Tensor:
    """``encoder(**inputs)`` for a dict of model inputs (audio encoders), else
    ``encoder(inputs)``."""
    return encoder(**inputs) if isinstance(inputs, dict) else encoder(inputs)


def to_device(inputs, device: torch.device):
    """A tensor, or a dict of tensors, moved to ``device``."""
    if isinstance(inputs, dict):
        return {name: value.to(device, non_blocking=True) for name, value in inputs.items()}
    return inputs.to(device, non_blocking=True)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (no gradient scaler needed: bf16 keeps float32's exponent range),
    nothing on the CPU. What must not run in bf16 leaves it inside the encoders: GE2E's LSTMs
    (which CUDA autocast would run in float16) and the sums and counts over frames (see
    :mod:`tuner.encoders`)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def embed(encoder: torch.nn.Module, data, *, head: torch.nn.Module | None = None,
          batch_size: int = 256, device: str | torch.device = "auto", amp: bool = True,
          num_workers: int = 0) -> np.ndarray:
    """Embeddings of ``data`` as an (N, D) float32 array.

    Parameters
    ----------
    encoder : a module mapping a batch to (B, D) (see :mod:`tuner.encoders`); it is moved to
        ``device`` and put back in its previous train/eval mode afterwards.
    data : a tensor or array of inputs (first axis = examples), or a Dataset whose items are
        ``(inputs, target)`` (:class:`tuner.data.ArrayDataset`, :class:`tuner.data.AudioDataset`).
    head : embed after this module too (e.g. the projection head) instead of the encoder
        output.
    device : ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a torch.device.

    Raises
    ------
    NonFiniteError
        (a ValueError) Some rows hold NaN or infinite values: the message says how many and
        which (with their files, for audio datasets). Nothing is returned.
    """
    dataset = dataset_of(data)
    device = device if isinstance(device, torch.device) else select_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_for(dataset, encoder))
    modules = [encoder] + ([head] if head is not None else [])
    modes = [module.training for module in modules]
    rows = []
    try:
        for module in modules:
            module.to(device).eval()
        for inputs, _ in loader:
            with autocast(device, amp):
                output = encode(encoder, to_device(inputs, device))
                if head is not None:
                    output = head(output)
            rows.append(output.float().cpu().numpy())
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)
    if not rows:
        raise ValueError("nothing to embed: the data set is empty")
    out = np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
    check_embeddings(out, dataset)
    return out


def check_embeddings(rows: np.ndarray, dataset=None) -> None:
    """Refuse embeddings with NaN or infinite values: one line with how many rows, the first
    few of them and, when ``dataset`` names its items (audio files), their names."""
    bad = nonfinite_rows(rows)
    if len(bad):
        raise NonFiniteError(
            f"{len(bad)} of {len(rows)} embeddings hold NaN or infinite values: "
            f"{describe_rows(bad, item_names(dataset))}; the encoder's weights or these "
            "inputs are not finite")


def item_names(dataset) -> list[str] | None:
    """The names of a dataset's items in order (the file names of an audio dataset, also
    through ``Subset``s), or None when it has none."""
    if isinstance(dataset, Subset):
        names = item_names(dataset.dataset)
        return None if names is None else [names[index] for index in dataset.indices]
    paths = getattr(dataset, "paths", None)
    if paths is None or len(paths) != len(dataset):
        return None
    return [getattr(path, "name", str(path)) for path in paths]


@torch.no_grad()
def cache_sequences(front_end: torch.nn.Module, data, *, batch_size: int = 64,
                    device: str | torch.device = "auto") -> list[np.ndarray]:
    """The front end's output sequence of every item of ``data``, each cut to its own length
    (float32 numpy, in order): computed once, so that training the layers above costs no
    front-end passes. ``front_end(**inputs)`` must return (B, T, F) for inputs with
    ``lengths``."""
    dataset = dataset_of(data)
    device = device if isinstance(device, torch.device) else select_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=collate_for(dataset, front_end))
    front_end.to(device).eval()
    out = []
    for inputs, _ in loader:
        inputs = to_device(inputs, device)
        sequences = front_end(**inputs).float().cpu().numpy()
        out += [sequence[:int(length)] for sequence, length in
                zip(sequences, inputs["lengths"].cpu(), strict=True)]
    return out
