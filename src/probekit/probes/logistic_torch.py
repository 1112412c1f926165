"""The block sums of the logistic objectives in torch: float32 on the GPU when there is one.

The same arithmetic as :func:`probekit.probes.logistic.softmax_block` and
:func:`~probekit.probes.logistic.sigmoid_block` (float32 logits and residuals, the loss and
every row or block sum accumulated in float64, the sums over blocks in float64 on the device),
so the L-BFGS driver on the host sees the same objective from either backend; only the rounding
of the float32 products and of ``exp``/``log`` differs.

Where the rows are (``placement``):

- ``"device"``: on CUDA, when the standardised float32 rows and their labels fit the device
  budget (half the free device memory, :func:`device_budget`), they are standardised block by
  block on the host and put on the device once (no host copy); every evaluation reads them
  there.
- ``"copy"`` / ``"stream"``: otherwise each evaluation moves every block host → device, from the
  standardised copy when there is one or standardised again from the source. On the CPU the
  blocks are the numpy blocks themselves (no copy).

The blocks are the same in every placement (CUDA: :data:`CUDA_BLOCK_ELEMENTS` values per block,
fewer kernel launches; CPU: the numpy size), so the placement changes no bit. torch's TF32
setting is the caller's and is left alone (touching it can leave torch refusing to read it
later); its default, full float32 products, is what the stated tolerances assume: TF32 rounds
the products' inputs to 10 bits. torch is imported by the calls, not by this module.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from probekit.accelerators import current_cuda_device, import_torch
from probekit.probes.standard import StandardRows, alike, block_rows, count_blocks, hold
from probekit.ranks import SINGLE, Ranks

CUDA_BLOCK_ELEMENTS = 1 << 25  # values per block on CUDA (128 MiB of float32)


def device_budget(torch, device) -> int:
    """Bytes of rows and labels that may be put on ``device``: half its free memory, counting
    what torch's caching allocator holds unused (a previous fit's rows) as free."""
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return (int(free) + int(cached)) // 2


def softmax_block(torch, X, y, coef, intercept):
    """:func:`probekit.probes.logistic.softmax_block` in torch (float64 sums on the device)."""
    logits = X @ coef
    logits += intercept
    logits -= logits.max(dim=1, keepdim=True).values
    true_logit = logits.gather(1, y[:, None])[:, 0].double()
    logits.exp_()
    total = logits.sum(dim=1, dtype=torch.float64)
    loss = (total.log() - true_logit).sum()
    logits /= total[:, None].float()
    rows = torch.arange(len(y), device=y.device)
    logits[rows, y] -= 1.0  # each (row, code) once: no accumulation order involved
    return loss, (X.T @ logits).double(), logits.sum(dim=0, dtype=torch.float64)


def sigmoid_block(torch, X, Y, coef, intercept):
    """:func:`probekit.probes.logistic.sigmoid_block` in torch (float64 sums on the device)."""
    logits = X @ coef
    logits += intercept
    targets = Y.float()
    wide = logits.double()
    loss = torch.logaddexp(torch.zeros((), dtype=torch.float64, device=wide.device),
                           wide).sum() - (targets * logits).sum(dtype=torch.float64)
    residual = torch.sigmoid(logits)
    residual -= targets
    return loss, (X.T @ residual).double(), residual.sum(dim=0, dtype=torch.float64)


BLOCKS = {"softmax": softmax_block, "sigmoid": sigmoid_block}


def torch_sums(rows: StandardRows, targets: np.ndarray, *, kind: str, outputs: int,
               device: str, memory_budget: int, ranks: Ranks = SINGLE
               ) -> tuple[Callable[[np.ndarray, np.ndarray], tuple], str]:
    """``(sums, placement)``: ``sums(coef, intercept)`` gives the loss and gradient sums over all
    ``rows`` as float64 numpy (one transfer per evaluation), evaluated in torch on ``device``
    (``"cuda"``: the current CUDA device; ``"cpu"``). Rows that stay on the host are held as a
    copy when they fit ``memory_budget`` bytes (:func:`probekit.probes.standard.hold`); see the
    module docstring for the placement.

    With ``ranks`` sharded each rank places and evaluates only its share of the blocks; every
    block's sums come to the host (float64) and are added in block order across the ranks, as
    :func:`probekit.probes.logistic.numpy_sums` does: float64 additions in the same order on
    the device or on the host round alike, so the sums are one process's, bit for bit."""
    from probekit.probes.logistic import add_block_sums

    torch = import_torch()
    block = BLOCKS[kind]
    dim = rows.shape[1]
    on_cuda = device == "cuda"
    target = torch.device("cuda", current_cuda_device()) if on_cuda else torch.device("cpu")
    size = block_rows(dim, outputs, CUDA_BLOCK_ELEMENTS if on_cuda else None)
    mine = ranks.share(count_blocks(rows.shape[0], size)) if ranks.sharded else None
    n = rows.shape[0]
    if mine is not None:  # the rows of this rank's blocks
        n = min(n, mine.stop * size) - min(n, mine.start * size)
    wanted = np.int64 if kind == "softmax" else np.bool_

    def moved(start, stop, X):
        labels = np.ascontiguousarray(targets[start:stop], dtype=wanted)
        return (torch.from_numpy(np.ascontiguousarray(X)).to(target),
                torch.from_numpy(labels.copy()).to(target))

    resident = None
    label_bytes = n * (8 if kind == "softmax" else int(np.prod(targets.shape[1:])))

    def fits_here() -> bool:
        return on_cuda and n * dim * 4 + label_bytes <= device_budget(torch, target)

    # sharded: one placement on every rank, on the devices when every rank's share fits its own
    fits = all(ranks.agree(fits_here)) if on_cuda and mine is not None else fits_here()
    if fits:
        resident = alike(ranks, lambda: [moved(*part) for part in rows.blocks(size, mine)])
        placement = "device"
    else:
        rows = hold(rows, memory_budget)
        placement = rows.placement

    def blocks():
        if resident is not None:
            yield from resident
        else:
            for part in rows.blocks(size, mine):
                yield moved(*part)

    def sums(coef: np.ndarray, intercept: np.ndarray):
        weights = torch.from_numpy(coef.astype(np.float32)).to(target)
        bias = torch.from_numpy(intercept.astype(np.float32)).to(target)
        if mine is not None:
            def parts() -> list[tuple]:
                with torch.no_grad():
                    return [(float(loss.item()), grad_coef.cpu().numpy(),
                             grad_intercept.cpu().numpy())
                            for loss, grad_coef, grad_intercept in
                            (block(torch, X, labels, weights, bias) for X, labels in blocks())]

            return add_block_sums(ranks, parts, coef.shape, len(intercept))
        loss = torch.zeros((), dtype=torch.float64, device=target)
        grad_coef = torch.zeros(coef.shape, dtype=torch.float64, device=target)
        grad_intercept = torch.zeros(len(intercept), dtype=torch.float64, device=target)
        with torch.no_grad():
            for X, labels in blocks():
                part = block(torch, X, labels, weights, bias)
                loss += part[0]
                grad_coef += part[1]
                grad_intercept += part[2]
        return (float(loss.item()), grad_coef.cpu().numpy().astype(np.float64),
                grad_intercept.cpu().numpy().astype(np.float64))

    return sums, placement
