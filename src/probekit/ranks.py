"""The processes of a sharded evaluation under ``torchrun`` (torch.distributed), or the one
process of a plain run.

A run started by ``torchrun --nproc_per_node R -m probekit evaluate ...`` has R processes
(ranks). Work that grows with the number of training rows is split among them by whole
blocks of a fixed grid (:meth:`Ranks.share`): each rank searches its blocks of the database
and sums the linear probe's objective over its blocks; the partial results are combined in
block order (:meth:`Ranks.pass_along`: each rank merges its top-k lists into, or adds its sums
to, the running result of the rank before it), so every rank holds exactly the numbers one
process computes.
Everything else runs on every rank alike (it is cheap next to the sharded work), except the
geometry, which rank 0 computes, and rank 0 writes the outputs.

A failure on one rank must not leave the others waiting in a collective: sharded work runs
through :meth:`Ranks.agree`, which gathers every rank's outcome and raises the same
:class:`~probekit.errors.InputError` line on all of them when any failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from probekit.errors import InputError

T = TypeVar("T")


class ShardFailure(InputError):
    """A failure on one rank of a sharded run, raised alike on every rank by
    :meth:`Ranks.agree` (its line names the rank)."""


TIMEOUT = timedelta(hours=2)  # longest wait in a collective (rank 0's geometry, a slow rank)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a sharded run: ``rank`` of ``size`` (0 of 1 in a plain run)."""

    rank: int = 0
    size: int = 1

    @property
    def sharded(self) -> bool:
        return self.size > 1

    def share(self, n_items: int) -> range:
        """This rank's contiguous share of ``n_items`` items (blocks): rank r takes
        ``[r·n/R, (r+1)·n/R)``, so the shares are in rank order and differ by at most one."""
        return range(self.rank * n_items // self.size, (self.rank + 1) * n_items // self.size)

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank (``[value]`` in a plain
        run)."""
        if not self.sharded:
            return [value]
        import torch.distributed as dist

        gathered: list = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def agree(self, work: Callable[[], T]) -> list[T]:
        """Run ``work()`` on this rank and gather every rank's result (rank order). When it
        failed anywhere, every rank raises :class:`InputError` with the first failure's line
        (its rank named), instead of the others waiting for it."""
        try:
            outcome = (True, work())
        except InputError as error:
            outcome = (False, str(error))
        except MemoryError:
            outcome = (False, "out of memory")
        except Exception as error:  # noqa: BLE001 - reported on every rank, then re-raised
            if not self.sharded:
                raise
            outcome = (False, f"{type(error).__name__}: {error}")
        outcomes = self.gather(outcome)
        for rank, (ok, payload) in enumerate(outcomes):
            if not ok:
                if self.sharded:
                    raise ShardFailure(f"rank {rank} of {self.size} failed: {payload}")
                raise InputError(payload)
        return [payload for _, payload in outcomes]

    def pass_along(self, running: list, update: Callable[[list], None]) -> list:
        """Fold every rank's contribution into ``running`` (a list of contiguous numpy arrays,
        the same shapes and dtypes on every rank) in rank order: each rank receives the
        running arrays from the rank before it, ``update(running)`` changes them in place with
        its own contribution, and it passes them on; the last rank broadcasts the result.
        Every rank thus gets what one process gets applying every contribution in order,
        moving two copies of ``running`` whatever the number of ranks. In a plain run:
        ``update(running)``."""
        if not self.sharded:
            update(running)
            return running
        import torch
        import torch.distributed as dist

        tensors = [torch.from_numpy(array) for array in running]  # the same memory
        if self.rank > 0:
            for tensor in tensors:
                dist.recv(tensor, src=self.rank - 1)
        update(running)
        if self.rank < self.size - 1:
            for tensor in tensors:
                dist.send(tensor, dst=self.rank + 1)
        for tensor in tensors:
            dist.broadcast(tensor, src=self.size - 1)
        return running

    def add_in_order(self, work: Callable[[], list], length: int):
        """``Σ`` of every rank's parts (``work()`` returns this rank's list of float64 vectors
        of ``length``), added from zero in rank order and then list order: the additions one
        process makes over its list of every part, bit for bit, on every rank
        (:meth:`pass_along`); a failure of ``work`` on any rank is one line on all
        (:meth:`agree`)."""
        import numpy as np

        parts: list = []
        if self.sharded:
            self.agree(lambda: parts.extend(work()))  # only the outcome is gathered
        else:
            parts = work()

        def add(running: list) -> None:
            for part in parts:
                running[0] += part

        return self.pass_along([np.zeros(length)], add)[0]


SINGLE = Ranks()


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start() -> Ranks:
    """Join the process group ``torchrun`` set up and return this process's :class:`Ranks`;
    :data:`SINGLE` when not launched by torchrun. Needs torch.

    The ranks exchange host arrays (the running top-k lists, the running sums of the linear
    objective, the outcome of each step) through gloo, which carries them between processes
    and machines alike; with CUDA each rank works on its own GPU (device ``LOCAL_RANK``),
    where its searches and linear fits run."""
    if not launched_by_torchrun():
        return SINGLE
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise InputError("a sharded run (torchrun) needs torch: pip install torch") from None
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size())


def this_rank() -> int:
    """This process's rank from torchrun's environment (0 in a plain run), readable before
    the process group starts."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def stop(ranks: Ranks) -> None:
    """Leave the process group (after every rank is done)."""
    if ranks.sharded:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
