"""Which optional compute libraries and devices are here: faiss, torch, an NVIDIA GPU.

The checks are ordered from cheap to costly: a device node or driver file is looked for before
torch is imported (importing it costs seconds) and before faiss-gpu counts GPUs (which can
abort the process on a machine with the GPU build and no driver).
"""

from __future__ import annotations

import os
import sys


def nvidia_device_present() -> bool:
    """Cheap test for an NVIDIA GPU (device node or driver), made before importing torch."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def import_faiss():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def import_torch():
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def cuda_available() -> bool:
    """A CUDA device torch can use; torch is imported only on a machine with an NVIDIA
    device."""
    if not nvidia_device_present():
        return False
    torch = import_torch()
    return torch is not None and bool(torch.cuda.is_available())


def current_cuda_device() -> int:
    """The CUDA device a caller has made current (``torch.cuda.set_device``, as tuner does for
    each rank), 0 when torch has not been loaded or has not initialised CUDA: work placed on
    the GPU goes where the caller's other tensors are."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.current_device())
    return 0
