"""Which optional compute libraries and devices are here: faiss, torch, an NVIDIA GPU.

The checks are ordered from cheap to costly: a device node or driver file is looked for before
torch is imported (importing it costs seconds) and before faiss-gpu counts GPUs (which can
abort the process on a machine with the GPU build and no driver). A GPU build of faiss is
only trusted after one tiny search has run in a child process: faiss's CUDA checks abort the
process (rather than raise) when, for example, the build has no kernels for the GPU's
architecture, and a child's abort cannot take the caller with it.
"""

from __future__ import annotations

import functools
import os
import subprocess
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


FAISS_GPU_PROBE = """
import numpy, faiss
index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), {device}, faiss.IndexFlatL2(8))
index.add(numpy.eye(8, dtype="float32"))
distances, found = index.search(numpy.eye(8, dtype="float32")[:2], 1)
assert found[:, 0].tolist() == [0, 1], found
print("ok")
"""


@functools.lru_cache(maxsize=8)
def faiss_gpu_works(device: int = 0) -> bool:
    """Whether faiss's GPU search runs on CUDA device ``device``: one 8-row search in a child
    process (at most two minutes; once per process and device). False without an NVIDIA
    device, without a GPU build of faiss, or when the child fails or aborts."""
    if not nvidia_device_present():
        return False
    faiss = import_faiss()
    if faiss is None or not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        done = subprocess.run([sys.executable, "-c", FAISS_GPU_PROBE.format(device=device)],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip().endswith("ok")
