"""The cheap CPU path: tune a small adapter on top of frozen embeddings.

A residual MLP ``a(x) = x + MLP(x)`` (initialised at the identity map) is trained on fixed
embedding rows with supervised contrastive loss on a projection head (or cross-entropy on a
linear head, the baseline the paper compares against); the tuned embeddings are the adapter's
output, before any head. The loop is :func:`tuner.train.fit` (AdamW, warm-up then cosine
decay, gradient clipping, m-per-class batches for SupCon, everything seeded), on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuner.data import ArrayDataset
from tuner.finite import NonFiniteError, describe_rows, nonfinite_rows
from tuner.train import TrainConfig, fit


class Adapter(nn.Module):
    """``x + MLP(x)`` with the MLP's last layer zero-initialised (the identity at step 0)."""

    def __init__(self, dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden = hidden_dim or dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x):
        return x + self.mlp(x)


@dataclass
class AdapterConfig:
    """Training settings (all defaults are parameters of ``probekit tune``)."""

    objective: str = "supcon"  # or "ce": cross-entropy on a linear head (the baseline)
    epochs: int = 30
    batch_size: int = 128
    m: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    temperature: float = 0.07
    hidden_dim: int | None = None
    head_dim: int = 128
    clip_norm: float = 1.0
    seed: int = 0


def train_adapter(X: np.ndarray, y: np.ndarray, config: AdapterConfig | None = None,
                  *, log=None) -> tuple[Adapter, list[float]]:
    """Train an :class:`Adapter` on rows ``X`` (N, D) with class ids ``y`` with
    :func:`tuner.train.fit` on the CPU; returns it (in eval mode) and the mean loss of every
    epoch. ``log(epoch, loss)`` is called after each epoch."""
    config = config or AdapterConfig()
    if config.objective not in ("supcon", "ce"):
        raise ValueError(f"objective must be 'supcon' or 'ce', got {config.objective}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused just below
        rows = np.ascontiguousarray(X, dtype=np.float32)
    bad = nonfinite_rows(rows)
    if len(bad):
        raise NonFiniteError(f"{len(bad)} of {len(rows)} training rows hold NaN or infinite "
                             f"values in float32 ({describe_rows(bad)})")
    data = ArrayDataset(rows, np.asarray(y))
    n_classes = len(data.classes)
    batch = min(config.batch_size - config.batch_size % config.m, config.m * n_classes)
    settings = TrainConfig(
        objective=config.objective, epochs=config.epochs, batch_size=batch, m=config.m,
        batches_per_epoch=max(1, math.ceil(len(data) / batch)), lr=config.lr,
        weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs,
        temperature=config.temperature, head_dim=config.head_dim, clip_norm=config.clip_norm,
        device="cpu", seed=config.seed, probe_every=0, progress=False, verbose=False)
    torch.manual_seed(config.seed)
    adapter = Adapter(X.shape[1], config.hidden_dim)
    result = fit(adapter, data, config=settings, on_epoch=None if log is None else (
        lambda record: log(record["epoch"] - 1, record["loss"])))
    return adapter.eval(), [record["loss"] for record in result.history]


@torch.no_grad()
def apply_adapter(adapter: Adapter, X: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """The tuned embeddings of rows ``X`` (float32), in batches.

    Raises :class:`tuner.finite.NonFiniteError` (a ValueError) when a tuned row holds NaN or
    infinite values (non-finite input rows, or values so large that the MLP overflows float32):
    non-finite embeddings are never returned.
    """
    adapter.eval()
    out = np.empty((X.shape[0], X.shape[1]), dtype=np.float32)
    for start in range(0, X.shape[0], batch_size):
        block = torch.from_numpy(np.ascontiguousarray(X[start:start + batch_size], np.float32))
        out[start:start + len(block)] = adapter(block).numpy()
    bad = nonfinite_rows(out)
    if len(bad):
        raise NonFiniteError(f"{len(bad)} of {len(out)} tuned embeddings hold NaN or infinite "
                             f"values ({describe_rows(bad)}): the input rows are not finite or "
                             "so large that the adapter overflows float32")
    return out

