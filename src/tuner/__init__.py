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
"""

from tuner.embed import embed
from tuner.train import TrainConfig, TrainResult, fit

__all__ = ["TrainConfig", "TrainResult", "embed", "fit"]
