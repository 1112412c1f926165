import numpy as np
import pytest


def gaussian_classes(n=300, dim=16, n_classes=4, *, separation=3.0, seed=0, dtype=np.float32):
    """Well-separated Gaussian classes: (X, y) with y in 0..n_classes-1, every class present."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    centres = rng.normal(size=(n_classes, dim)) * separation
    X = centres[y] + rng.normal(size=(n, dim))
    return X.astype(dtype), y.astype(np.int64)


@pytest.fixture
def blobs():
    return gaussian_classes()


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
