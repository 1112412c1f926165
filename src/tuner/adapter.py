"""The cheap CPU path: tune a small adapter on top of frozen embeddings.

A residual MLP ``a(x) = x + MLP(x)`` (initialised at the identity map) is trained on fixed
embedding rows with supervised contrastive loss on a projection head (or cross-entropy on a
linear head, the baseline the paper compares against); the tuned embeddings are the adapter's
output, before any head. AdamW, a linear warm-up then cosine decay, gradient clipping,
m-per-class batches, everything seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuner.heads import ProjectionHead
from tuner.losses import SupConLoss
from tuner.sampling import MPerClassSampler


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
    """Train an :class:`Adapter` on rows ``X`` (N, D) with class ids ``y``; returns it (in eval
    mode) and the mean loss of every epoch. ``log(epoch, loss)`` is called after each epoch."""
    config = config or AdapterConfig()
    if config.objective not in ("supcon", "ce"):
        raise ValueError(f"objective must be 'supcon' or 'ce', got {config.objective}")
    torch.manual_seed(config.seed)
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    targets = torch.from_numpy(codes.astype(np.int64))
    dim = data.shape[1]
    adapter = Adapter(dim, config.hidden_dim)
    if config.objective == "supcon":
        head, loss_fn = ProjectionHead(dim, config.head_dim), SupConLoss(config.temperature)
    else:
        head, cross_entropy = nn.Linear(dim, len(classes)), nn.CrossEntropyLoss()

        def loss_fn(outputs, labels):
            return cross_entropy(outputs, labels)
    batch = min(config.batch_size - config.batch_size % config.m,
                config.m * len(classes))
    sampler = MPerClassSampler(codes, m=config.m, batch_size=batch, seed=config.seed,
                               batches_per_epoch=max(1, math.ceil(len(codes) / batch)))
    parameters = list(adapter.parameters()) + list(head.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(sampler)
    warmup = config.warmup_epochs * len(sampler)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _lr_factor(step,
                                                                                    warmup, total))
    history = []
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        adapter.train()
        head.train()
        losses = []
        for indices in sampler:
            index = torch.as_tensor(indices)
            loss = loss_fn(head(adapter(data[index])), targets[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(parameters, config.clip_norm)
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
        if log:
            log(epoch, history[-1])
    adapter.eval()
    return adapter, history


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def apply_adapter(adapter: Adapter, X: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """The tuned embeddings of rows ``X`` (float32), in batches."""
    adapter.eval()
    out = np.empty((X.shape[0], X.shape[1]), dtype=np.float32)
    for start in range(0, X.shape[0], batch_size):
        block = torch.from_numpy(np.ascontiguousarray(X[start:start + batch_size], np.float32))
        out[start:start + len(block)] = adapter(block).numpy()
    return out

