"""The logistic objectives of the linear probes as sums over row blocks, on numpy or torch.

Both probes minimise a mean loss over the n training rows plus an L2 penalty on the weights
``W`` (``D × K``; the intercepts ``b`` are not penalised)::

    f(W, b) = (1/n) Σ_blocks Σ_{i ∈ block} ℓ_i(x_i W + b)  +  (λ/2) ||W||_F²

    softmax (one label per row):  ℓ_i(z) = logsumexp(z) − z_{y_i},      ∂ℓ_i/∂z = p_i − e_{y_i}
    sigmoid (one-vs-rest tags):   ℓ_i(z) = Σ_c log(1 + e^{z_c}) − y_ic z_c,  ∂ℓ_i/∂z = σ(z) − y_i

with λ chosen by the caller (``1 / (C n)``; doubled for a two-class softmax, see
:mod:`probekit.probes.linear`). One block gives the sums ``(Σ ℓ_i, X_bᵀ R_b, Σ_i R_b)`` of the
losses and of the gradient (``R_b`` the residuals ∂ℓ/∂z); :func:`penalised_objective` adds the
blocks' sums, divides by n and adds the penalty. The blocks' sums are added in float64 in block
order, so a sharded run (:mod:`probekit.ranks`) gets one process's sums bit for bit: each rank
evaluates its share of the blocks, and at every evaluation the ranks add the blocks' sums in
block order, each rank continuing the running total of the rank before it.

Every block's logits, softmax and residuals are float32, and the block's loss, its row sums and
the sums over blocks are accumulated in float64 (products: float32 with float32 accumulation
inside one block); the parameters and the L-BFGS driver (:mod:`probekit.probes.lbfgs`) are
float64 on the host for both backends:

- ``numpy``: the blocks in host memory.
- ``torch``: the same arithmetic in torch (:mod:`probekit.probes.logistic_torch`), on the
  current CUDA device when there is one, on the CPU otherwise.
- ``auto``: torch when a CUDA device is usable, numpy otherwise (torch is imported only on a
  machine with an NVIDIA device).

The blocks (their size: :func:`probekit.probes.standard.block_rows`) do not depend on where the
rows are held, so a copy and a stream of the same rows give the same bits on one backend.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit

from probekit.accelerators import cuda_available, import_torch
from probekit.errors import InputError, install_hint
from probekit.probes import logistic_torch
from probekit.probes.lbfgs import lbfgs
from probekit.probes.standard import (
    DEFAULT_MEMORY_BUDGET,
    StandardRows,
    block_rows,
    count_blocks,
    hold,
)
from probekit.ranks import SINGLE, Ranks

LINEAR_BACKENDS = ("numpy", "torch", "auto")
KINDS = ("softmax", "sigmoid")

# (loss, gradient of the weights, gradient of the intercepts), summed over rows
Sums = tuple[float, np.ndarray, np.ndarray]


def resolve_linear_backend(name: str) -> tuple[str, str]:
    """``(backend, device)`` for ``name`` in :data:`LINEAR_BACKENDS`: ``("numpy", "cpu")``,
    ``("torch", "cuda")`` or ``("torch", "cpu")``. :class:`InputError` for an unknown name or
    for torch when it is not installed."""
    if name not in LINEAR_BACKENDS:
        raise InputError(f"unknown linear backend '{name}': choose one of "
                         f"{', '.join(LINEAR_BACKENDS)}")
    if name == "auto":
        return ("torch", "cuda") if cuda_available() else ("numpy", "cpu")
    if name == "numpy":
        return "numpy", "cpu"
    torch = import_torch()
    if torch is None:
        raise InputError(f"linear backend 'torch' needs torch, which is not installed "
                         f"({install_hint('tuner')})")
    return "torch", "cuda" if torch.cuda.is_available() else "cpu"


def softmax_block(X: np.ndarray, y: np.ndarray, coef: np.ndarray,
                  intercept: np.ndarray) -> Sums:
    """Sums of the multinomial cross-entropy and its gradient over one block: float32
    ``X`` ``(m, D)``, codes ``y`` ``(m,)``, float32 ``coef`` ``(D, K)`` and ``intercept``."""
    rows = np.arange(len(y))
    logits = X @ coef
    logits += intercept
    logits -= logits.max(axis=1, keepdims=True)  # shifted by the row maximum: no overflow
    true_logit = logits[rows, y].astype(np.float64)
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, dtype=np.float64)
    loss = float(np.sum(np.log(total) - true_logit))
    logits /= total[:, None].astype(np.float32)  # probabilities P
    logits[rows, y] -= 1.0  # the residual P − Y, in place
    return loss, (X.T @ logits).astype(np.float64), logits.sum(axis=0, dtype=np.float64)


def sigmoid_block(X: np.ndarray, Y: np.ndarray, coef: np.ndarray,
                  intercept: np.ndarray) -> Sums:
    """Sums of the one-vs-rest logistic losses and their gradient over one block: float32
    ``X`` ``(m, D)``, 0/1 tags ``Y`` ``(m, K)``, float32 ``coef`` ``(D, K)`` and
    ``intercept``. ``log(1 + e^z)`` is ``logaddexp(0, z)`` in float64 (no overflow)."""
    logits = X @ coef
    logits += intercept
    targets = Y.astype(np.float32)
    loss = float(np.logaddexp(0.0, logits, dtype=np.float64).sum()
                 - np.sum(targets * logits, dtype=np.float64))
    residual = expit(logits)
    residual -= targets
    return loss, (X.T @ residual).astype(np.float64), residual.sum(axis=0, dtype=np.float64)


BLOCKS = {"softmax": softmax_block, "sigmoid": sigmoid_block}


def add_block_sums(ranks: Ranks, work: Callable[[], list[Sums]], coef_shape: tuple[int, int],
                   outputs: int) -> Sums:
    """The sums of every block, each rank's ``work()`` giving the sums of its share of the
    blocks: added in float64 in block order from zero, the additions one process makes, by
    :meth:`probekit.ranks.Ranks.add_in_order` (each block's three sums as one vector)."""
    size = int(np.prod(coef_shape))

    def flat() -> list[np.ndarray]:
        return [np.concatenate([[part[0]], np.ravel(part[1]), np.ravel(part[2])])
                for part in work()]

    total = ranks.add_in_order(flat, 1 + size + outputs)
    return float(total[0]), total[1:1 + size].reshape(coef_shape), total[1 + size:]


def numpy_sums(rows: StandardRows, targets: np.ndarray, kind: str, outputs: int, *,
               ranks: Ranks = SINGLE) -> Callable[[np.ndarray, np.ndarray], Sums]:
    """``sums(coef, intercept)``: the loss and gradient sums over all ``rows``, block by block
    in numpy, added in float64 in block order. With ``ranks`` sharded each rank evaluates its
    share of the blocks (:meth:`probekit.ranks.Ranks.share`) and the blocks' sums are added in
    block order across the ranks (:func:`add_block_sums`): one process's sums, bit for bit."""
    block = BLOCKS[kind]
    size = block_rows(rows.shape[1], outputs)
    mine = ranks.share(count_blocks(rows.shape[0], size))

    def sums(coef: np.ndarray, intercept: np.ndarray) -> Sums:
        coef32, intercept32 = coef.astype(np.float32), intercept.astype(np.float32)
        if ranks.sharded:
            def parts() -> list[Sums]:
                return [block(X, targets[start:stop], coef32, intercept32)
                        for start, stop, X in rows.blocks(size, mine)]

            return add_block_sums(ranks, parts, coef.shape, len(intercept))
        loss, grad_coef, grad_intercept = 0.0, np.zeros(coef.shape), np.zeros(len(intercept))
        for start, stop, X in rows.blocks(size):
            part = block(X, targets[start:stop], coef32, intercept32)
            loss += part[0]
            grad_coef += part[1]
            grad_intercept += part[2]
        return loss, grad_coef, grad_intercept

    return sums


def objective_sums(rows: StandardRows, targets: np.ndarray, *, kind: str, outputs: int,
                   backend: str = "numpy", device: str = "cpu",
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, ranks: Ranks = SINGLE
                   ) -> tuple[Callable[[np.ndarray, np.ndarray], Sums], str]:
    """The block sums of ``kind`` (``"softmax"``: ``targets`` are codes; ``"sigmoid"``: 0/1
    tags) over ``rows`` on ``backend`` (:func:`numpy_sums`,
    :func:`probekit.probes.logistic_torch.torch_sums`), and where the rows are held:
    ``"copy"`` (a standardised float32 copy in host memory, made when it fits
    ``memory_budget`` bytes), ``"stream"`` (standardised again from the source at every
    evaluation) or ``"device"`` (on the GPU, put there once). The rows are placed once, here,
    for every evaluation of every fit that uses the returned sums.

    With ``ranks`` sharded (every rank calls with the same arguments, and then evaluates the
    sums at the same parameters) each rank reads only its share of the blocks, streamed from
    the source (no host copy: the budget counts as 0) or put on the GPU; the sums are one
    process's, bit for bit."""
    if kind not in KINDS:
        raise ValueError(f"unknown objective {kind}")
    if ranks.sharded:
        memory_budget = 0
    if backend == "torch":
        return logistic_torch.torch_sums(rows, targets, kind=kind, outputs=outputs,
                                         device=device, memory_budget=memory_budget,
                                         ranks=ranks)
    rows = hold(rows, memory_budget)
    return numpy_sums(rows, targets, kind, outputs, ranks=ranks), rows.placement


def penalised_objective(sums: Callable[[np.ndarray, np.ndarray], Sums], n: int, dim: int,
                        outputs: int, penalty: float
                        ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``f(params) -> (value, gradient)`` for L-BFGS: ``params`` is ``W`` ``(D, K)`` raveled,
    then ``b``; ``f = loss_sum / n + (penalty / 2) ||W||²`` (module docstring)."""
    split = dim * outputs

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        coef = params[:split].reshape(dim, outputs)
        loss, grad_coef, grad_intercept = sums(coef, params[split:])
        value = loss / n + 0.5 * penalty * np.sum(coef**2)
        return value, np.concatenate([(grad_coef / n + penalty * coef).ravel(),
                                      grad_intercept / n])

    return objective


def minimise(sums: Callable[[np.ndarray, np.ndarray], Sums], *, n: int, dim: int, outputs: int,
             penalty: float, init: np.ndarray | None, max_iter: int, tol: float
             ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """L-BFGS on :func:`penalised_objective` from ``init`` (flat parameters; zeros when None).
    Returns ``coef`` ``(D, K)``, ``intercept`` ``(K,)``, the iterations and convergence."""
    start = np.zeros(dim * outputs + outputs) if init is None else init
    solution, n_iter, converged = lbfgs(penalised_objective(sums, n, dim, outputs, penalty),
                                        start, max_iter=max_iter, tol=tol)
    return (solution[: dim * outputs].reshape(dim, outputs), solution[dim * outputs:].copy(),
            n_iter, converged)


def decision_blocks(rows: StandardRows, coef: np.ndarray, intercept: np.ndarray):
    """Yield ``(start, stop, scores)``: float32 ``X W + b`` of the rows, block by block (in
    numpy on every backend: one pass, next to the hundreds of passes of a fit)."""
    coef32, intercept32 = coef.astype(np.float32), intercept.astype(np.float32)
    for start, stop, X in rows.blocks(block_rows(rows.shape[1], coef.shape[1])):
        scores = X @ coef32
        scores += intercept32
        yield start, stop, scores
