"""Where a training process runs: its device, its rank, and the cross-rank gather.

Under ``torchrun --nproc_per_node=N`` every process reads ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` from its environment; :func:`init_distributed` starts the process group from
them and is a no-op for a single process. The backend follows the training device, not the
machine: NCCL when the processes train on CUDA, gloo when they train on the CPU (also on a
machine with GPUs: ``device="cpu"`` never touches them). The same code runs with or without
CUDA: :func:`select_device` is the only place that chooses a device.

**One GPU per process.** Local rank r trains on ``cuda:r`` (of the devices visible to it); a
node with fewer visible GPUs than processes is refused in one line naming both counts, before
any GPU work. Mapping two ranks onto one GPU is not offered: NCCL refuses two ranks of one
communicator on the same device ("Duplicate GPU detected"), and where it does not the ranks
would only contend for one GPU's memory and compute. :func:`init_distributed` calls
``torch.cuda.set_device`` before the process group (or anything else) allocates, so that in
every process "cuda" (the current device: probekit's neighbour search, NCCL's communicator,
``torch.cuda`` calls without an index) means that process's own GPU.

**Timeout.** Only rank 0 probes and writes checkpoints; meanwhile the other ranks wait in a
collective, and a collective that waits longer than the process-group timeout aborts the job
(NCCL's default is 10 minutes, gloo's 30). Embedding a large validation set for the probes
takes longer than that, so the timeout is :data:`DEFAULT_TIMEOUT_MINUTES` (60), or the minutes
in the environment variable :data:`TIMEOUT_VARIABLE` (``TUNER_DDP_TIMEOUT_MINUTES``), or the
``timeout_minutes`` given to :func:`init_distributed`.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

import torch
from torch import distributed as dist

TIMEOUT_VARIABLE = "TUNER_DDP_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 60.0


def select_device(name: str | torch.device = "auto", local_rank: int = 0,
                  world_size: int = 1) -> torch.device:
    """``"auto"``: this process's CUDA device when CUDA is available, else the CPU; ``"cpu"``,
    ``"cuda"`` (this process's GPU: ``cuda:<local_rank>``) or an explicit ``"cuda:1"`` (one
    process only: with ``world_size`` > 1 it would put every process on that one GPU).

    A CUDA device that is not there is a one-line ValueError: no CUDA at all, an index past
    the visible devices, or a local rank with no GPU of its own (more processes on this node
    than visible GPUs; the message names both counts)."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    kind, colon, index = name.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name} was asked for but torch sees no CUDA device")
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f"{count} CUDA device(s)" + (f" (CUDA_VISIBLE_DEVICES={visible})"
                                        if visible is not None else "")
    if colon:
        if world_size > 1:
            raise ValueError(f"device {name} names one GPU for all {world_size} processes; "
                             "use device cuda (each process on its own GPU, cuda:<local rank>)")
        if int(index) >= count:
            raise ValueError(f"device {name} was asked for but torch sees {seen}")
        return torch.device("cuda", int(index))
    if local_rank >= count:
        raise ValueError(f"local rank {local_rank} needs a GPU of its own (cuda:{local_rank}) "
                         f"but torch sees {seen}: start at most {count} process(es) per node "
                         f"(torchrun --nproc_per_node={count}) or train on the CPU (device cpu)")
    return torch.device("cuda", local_rank)


def backend_for(device: str | torch.device) -> str:
    """The process-group backend for processes that train on ``device``: ``"nccl"`` for CUDA,
    ``"gloo"`` for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def process_group_timeout(minutes: float | None = None) -> float:
    """The process-group timeout in minutes: ``minutes`` when given, else the environment variable
    :data:`TIMEOUT_VARIABLE`, else :data:`DEFAULT_TIMEOUT_MINUTES`; a value that is not a
    finite positive number is a one-line ValueError."""
    source = "timeout_minutes"
    if minutes is None:
        text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
        if not text:
            return DEFAULT_TIMEOUT_MINUTES
        source, minutes = TIMEOUT_VARIABLE, text
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{source} must be a finite number of minutes > 0, got {minutes}")
    return value


def init_distributed(device: str | torch.device = "auto",
                     timeout_minutes: float | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank). Starts the process group when launched by torchrun with
    more than one process and none is running yet; a single process gets (0, 1, 0).

    ``device`` is the training device (as :func:`select_device` takes it): it picks the
    backend (:func:`backend_for`) and, for CUDA, this process's GPU, which becomes the current
    device before the group starts. ``timeout_minutes``: see :func:`process_group_timeout`."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    chosen = select_device(device, local_rank, world)
    timeout = timedelta(minutes=process_group_timeout(timeout_minutes))
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    dist.init_process_group(backend_for(chosen), timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), local_rank


def check_process_group(device: torch.device) -> None:
    """A running process group must be able to carry ``device``'s tensors: NCCL carries CUDA
    tensors only, so CPU training under an NCCL group is a one-line ValueError (start the
    group with ``init_distributed("cpu")``, i.e. gloo)."""
    if is_distributed() and device.type != "cuda" and dist.get_backend() == "nccl":
        raise ValueError("the process group runs NCCL, which carries CUDA tensors only, but "
                         f"training runs on {device}: start it for that device "
                         f"(init_distributed('{device.type}') uses gloo)")


def end_distributed() -> None:
    """Shut the process group down (when one is running), e.g. at the end of a torchrun job."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward hands every rank the summed gradient of its own rows."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), rows.shape[0]
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(rows: torch.Tensor) -> torch.Tensor:
    """The rows of every rank, concatenated in rank order, keeping the gradient path to this
    rank's rows (every rank must pass the same number of rows).

    Every rank computes the same loss L on the global batch. The backward all-reduces the
    gradient, so rank r receives ``Σ_ranks ∂L/∂z_r = W ∂L/∂z_r``; DDP then averages parameter
    gradients over the W ranks, which leaves exactly ``∂L/∂θ`` of one process holding the whole
    batch. (A plain ``all_gather`` cuts the graph: negatives from other ranks would get no
    gradient.) A single process returns ``rows`` unchanged.
    """
    if not is_distributed():
        return rows
    return _GatherWithGrad.apply(rows)


def gather(rows: torch.Tensor) -> torch.Tensor:
    """The rows of every rank, concatenated in rank order (no gradient)."""
    if not is_distributed():
        return rows
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of a float over all ranks (itself for a single process)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def any_rank_failed(failed: bool, device: torch.device) -> bool:
    """Whether any rank reports a failure (an all-reduce, so it also synchronises the ranks);
    a single process returns ``failed``."""
    if not is_distributed():
        return failed
    flag = torch.tensor([1.0 if failed else 0.0], device=device)
    dist.all_reduce(flag)
    return bool(flag.item() > 0)
