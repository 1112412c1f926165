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


def write_embeddings(
    path_x, path_y, n: int, dim: int = 256, n_classes: int = 100, *, latent: int = 64,
    separation: float = 1.0, seed: int = 0, chunk: int = 65_536,
) -> None:
    """The model of :func:`make_embeddings` written chunk by chunk to two ``.npy`` files
    (float32 X, int64 y), so that a million rows never need more than one chunk in RAM.
    Centres and mixing come from ``seed``; each chunk's draws from ``(seed, chunk index)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, latent)) * separation
    mixing = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    X = np.lib.format.open_memmap(path_x, mode="w+", dtype=np.float32, shape=(n, dim))
    y = np.lib.format.open_memmap(path_y, mode="w+", dtype=np.int64, shape=(n,))
    for index, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        draw = np.random.default_rng([seed, index])
        codes = draw.integers(0, n_classes, size=stop - start)
        latent_rows = centres[codes] + draw.normal(size=(stop - start, latent))
        X[start:stop] = latent_rows @ mixing + 0.5 * draw.normal(size=(stop - start, dim)) + 0.3
        y[start:stop] = codes
    X.flush()
    y.flush()
    del X, y
