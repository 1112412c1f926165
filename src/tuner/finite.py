"""Checks that nothing non-finite enters or leaves tuner: audio samples, weights, losses and
embeddings.

A single NaN spreads: one NaN sample in a batch makes the contrastive loss NaN (every anchor's
log-sum-exp runs over the whole batch), the optimiser step then writes NaN into every trained
weight, and every later embedding is NaN. So bad values are refused where they come in (audio
decoding, checkpoint loading, configuration), a loss that still turns non-finite stops training
(:class:`TrainingDiverged`), and embeddings are checked before they are returned.

Every error here is a :class:`ValueError` with a one-line message (the ``probekit`` CLI prints
such errors as ``error: ...`` and exits with status 2). Only numpy at import; torch is imported
by the functions that take tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

MAX_SAMPLE_MAGNITUDE = 1e4
"""Largest ``|x|`` accepted in a decoded waveform. Float audio is nominally within [-1, 1]
(integer PCM always decodes into it); 1e4 is 80 dB above full scale, which no recording reaches,
so such a file is corrupt or not audio. The bound also keeps every feature finite in float32:
a 400-sample power spectrum is at most ``(400 |x|)^2 = 1.6e13`` at ``|x| = 1e4``, far below
float32's 3.4e38, which ``|x| > 4.6e16`` would overflow."""

_SHOWN = 5


class NonFiniteError(ValueError):
    """NaN or infinite values where finite ones are required (one-line message)."""


class TrainingDiverged(NonFiniteError):
    """The training loss (or the weights after a step) turned NaN or infinite."""


def check_waveform(samples: np.ndarray, source: str) -> None:
    """Refuse a waveform with NaN or infinite samples, or with ``|x| >``
    :data:`MAX_SAMPLE_MAGNITUDE`; ``source`` names it in the one-line error (e.g. the file)."""
    samples = np.asarray(samples)
    if samples.size == 0:
        return
    finite = np.isfinite(samples)
    if not finite.all():
        count = int(samples.size - np.count_nonzero(finite))
        raise NonFiniteError(f"{source} holds {count} NaN or infinite sample(s) of "
                             f"{samples.size}: it is corrupt or not audio")
    peak = float(np.max(np.abs(samples)))
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise NonFiniteError(f"{source} holds samples of magnitude up to {peak:.3g}, over "
                             f"{MAX_SAMPLE_MAGNITUDE:g} (audio is nominally within [-1, 1]): "
                             "it is corrupt or not audio")


def nonfinite_rows(rows: np.ndarray) -> np.ndarray:
    """Indices of the rows of a 2-D array that hold a NaN or an infinity."""
    rows = np.asarray(rows)
    return np.flatnonzero(~np.isfinite(rows).reshape(len(rows), -1).all(axis=1))


def describe_rows(bad: Sequence[int], names: Sequence[str] | None = None) -> str:
    """``"rows 3, 7 (a.wav, b.wav)"``: the first few bad rows, with their names when known."""
    shown = [int(row) for row in bad[:_SHOWN]]
    more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    text = f"row{'s' if len(bad) > 1 else ''} {', '.join(map(str, shown))}{more}"
    if names is not None:
        text += f" ({', '.join(str(names[row]) for row in shown)}{more and ', ...'})"
    return text


def nonfinite_tensors(state, prefix: str = "") -> list[str]:
    """Names of the floating tensors in ``state`` (a tensor, or nested dicts / lists / tuples
    of them, e.g. a ``state_dict`` or an optimiser state) that hold a NaN or an infinity."""
    import torch

    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return [] if bool(torch.isfinite(state).all()) else [prefix or "tensor"]
        return []
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    found = []
    for key, value in items:
        found += nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def check_tensors(state, what: str, action: str = "load") -> None:
    """Refuse ``state`` (see :func:`nonfinite_tensors`) when a tensor in it is not finite;
    ``what`` names it in the one-line error (e.g. ``"checkpoint best.pt"``), ``action`` says
    what is refused (``"load"``, ``"save"``)."""
    bad = nonfinite_tensors(state)
    if bad:
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise NonFiniteError(f"{what} holds NaN or infinite values in {len(bad)} tensor(s) "
                             f"({', '.join(bad[:_SHOWN])}{more}); refusing to {action} it")


def check_setting(name: str, value, *, low: float | None = None, low_open: bool = False,
                  allow_none: bool = False) -> None:
    """A finite number (not a bool) no smaller than ``low`` (or above it when ``low_open``);
    ``None`` passes with ``allow_none``. One-line ValueError otherwise."""
    if value is None and allow_none:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or not np.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (number <= low if low_open else number < low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
