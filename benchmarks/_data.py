"""Synthetic embedding sets for the benchmarks: class structure in a low-dimensional subspace,
anisotropic noise, tuned so that neither probe is trivially perfect."""

from __future__ import annotations

import numpy as np


def make_embeddings(
    n: int = 50_000, dim: int = 768, n_classes: int = 50, *, latent: int = 64,
    separation: float = 1.0, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: X float32 (n, dim), y int64 (n,) with balanced classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    centres = rng.normal(size=(n_classes, latent)) * separation
    mixing = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    codes = centres[y] + rng.normal(size=(n, latent))
    X = codes @ mixing + 0.5 * rng.normal(size=(n, dim)) + 0.3
    return X.astype(np.float32), y.astype(np.int64)
