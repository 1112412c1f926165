"""Where a training process runs: its device, its rank, and the cross-rank gather.

Under ``torchrun --nproc_per_node=N`` every process reads ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` from its environment; :func:`init_distributed` starts the process group from
them (NCCL on CUDA, gloo on CPU) and is a no-op for a single process. The same code runs with
or without CUDA: :func:`select_device` is the only place that chooses.
"""

from __future__ import annotations

import os

import torch
from torch import distributed as dist


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's CUDA device when CUDA is available, else the CPU; ``"cpu"``,
    ``"cuda"`` (this process's GPU) or an explicit ``"cuda:1"``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name} was asked for but torch sees no CUDA device")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name}")
    return torch.device("cpu")


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank). Starts the process group when launched by torchrun with
    more than one process and none is running yet; a single process gets (0, 1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


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
