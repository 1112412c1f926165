import importlib.util
import sys
import types
import warnings

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


def run_ranks_of(script: str, folder, size: int, timeout: float = 120) -> list[str]:
    """Run the Python ``script`` as ``size`` processes (arguments: rank, size, ``folder``;
    the script joins their gloo group itself) and return each one's stdout, in rank order;
    fails on a crash or a timeout (a hang)."""
    import subprocess
    from pathlib import Path

    path = Path(folder) / "child.py"
    path.write_text(script)
    children = [subprocess.Popen([sys.executable, str(path), str(rank), str(size), str(folder)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for rank in range(size)]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=timeout)
        assert child.returncode == 0, err[-2000:]
        outputs.append(out)
    return outputs


def synthetic_speechlike(n_samples, seed, amplitude=0.02):
    """Seeded noise plus two amplitude-modulated tones at 16 kHz."""
    rng = np.random.default_rng(seed)
    time = np.arange(n_samples) / 16000
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * time)
    wav = (rng.normal(scale=0.3, size=n_samples)
           + envelope * np.sin(2 * np.pi * (180 + 40 * seed) * time)
           + 0.5 * np.sin(2 * np.pi * 1330 * time + 0.3))
    return (amplitude * wav).astype(np.float32)


def import_resemblyzer():
    """Resemblyzer, or a skip. webrtcvad 2.0.10 imports pkg_resources, which setuptools >= 81
    no longer ships; its VAD is not used here, so an empty stand-in lets the package import."""
    if importlib.util.find_spec("resemblyzer") is None:
        pytest.skip("resemblyzer is not installed")
    pytest.importorskip("librosa")
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.morphology
        import resemblyzer
    return resemblyzer


def import_torchcrepe():
    """torchcrepe (the reference CREPE), or a skip. Its package imports torchaudio and resampy,
    which need not be installed (probekit installs torchcrepe without dependencies) or may not
    load (a torchaudio built for another torch); they only read and resample files, so an empty
    stand-in takes the place of each missing one during the import and is removed afterwards,
    so that other packages (transformers) still see that it is not there."""
    if importlib.util.find_spec("torchcrepe") is None:
        pytest.skip("torchcrepe is not installed")
    if "torchcrepe" in sys.modules:
        return sys.modules["torchcrepe"]
    stand_ins = []
    for package in ("torchaudio", "resampy"):
        try:
            importlib.import_module(package)
        except Exception:  # ImportError, or OSError from a mismatched compiled library
            for name in [name for name in sys.modules if name.split(".")[0] == package]:
                del sys.modules[name]
            sys.modules[package] = types.ModuleType(package)
            stand_ins.append(package)
    try:
        import torchcrepe
    finally:
        for package in stand_ins:
            del sys.modules[package]
    return torchcrepe
