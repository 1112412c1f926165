"""tuner: the contrastive-tuning stage that feeds probekit (arXiv 2309.11895, stage 1).

Needs torch (``pip install 'probekit[tuner]'``; audio files also soundfile, Hugging Face models
transformers). Modules: :mod:`tuner.losses` (SupCon, Jaccard-weighted multi-label SupCon,
NT-Xent), :mod:`tuner.sampling` (m-per-class and shuffled batches, per-rank slices),
:mod:`tuner.heads` (the projection head), :mod:`tuner.encoders` (pooling, partial freezing, the
GE2E encoder with Resemblyzer's weights, Hugging Face audio models), :mod:`tuner.audio`
(decoding, resampling, manifests, mel features), :mod:`tuner.data` (datasets),
:mod:`tuner.train` (the training loop: ``fit``), :mod:`tuner.embed` (``embed`` -> numpy for
probekit), :mod:`tuner.distributed` (devices, torchrun, the gradient-preserving gather) and
:mod:`tuner.adapter` (a residual adapter on frozen embeddings, behind ``probekit tune``).

``tuner.fit(encoder, train, val, TrainConfig(...))`` and ``tuner.embed(encoder, data)`` are the
two calls most people need. (``tuner.embed`` is the function; import the module's helpers with
``from tuner.embed import ...``.)

Importing ``tuner`` (or a torch-free module such as :mod:`tuner.manifests`, :mod:`tuner.audio`
or :mod:`tuner.finite`) does not import torch: ``fit``, ``TrainConfig``, ``TrainResult`` and
``embed`` are loaded on first use (PEP 562 module ``__getattr__``), so ``probekit manifest``
runs without torch. ``tuner.embed`` is the function even after the submodule of that name has
been imported (which binds the submodule on the package): the package's module class keeps
the name for the function.
"""

from __future__ import annotations

import importlib
import sys
import types

_LAZY = {"TrainConfig": "tuner.train", "TrainResult": "tuner.train", "fit": "tuner.train"}

__all__ = ["TrainConfig", "TrainResult", "embed", "fit"]


def __getattr__(name: str):
    """``tuner.fit``, ``tuner.TrainConfig``, ``tuner.TrainResult``: imported on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The ``tuner`` module object: ``embed`` reads as the function :func:`tuner.embed.embed`;
    the import system's binding of the submodule ``tuner.embed`` on the package is ignored
    (``sys.modules["tuner.embed"]`` still holds the module)."""

    @property
    def embed(self):
        return importlib.import_module("tuner.embed").embed

    @embed.setter
    def embed(self, value) -> None:
        pass


sys.modules[__name__].__class__ = _Package
