"""The training loop of stage one: contrastive (or cross-entropy) fine-tuning of an encoder.

One loop for every case: any encoder (an MLP on rows, GE2E on mel frames, a Hugging Face
transformer on waveforms), on the CPU or a GPU, in one process or under
``torchrun --nproc_per_node=N``::

    for each epoch:
        for each global batch (m samples per class for SupCon; shuffled otherwise),
            this rank's slice -> encoder -> head -> [gather across ranks, with gradients]
            loss (SupCon | Jaccard SupCon | cross-entropy)
            AdamW step, gradient clipping, linear warm-up then cosine learning rate
        stop if the loss (or a weight) is NaN or infinite: TrainingDiverged, and the
        checkpoints keep the last finite epoch
        every ``probe_every`` epochs: embed the validation set (and a sample of the training
        set) and run probekit's kNN and linear probes (single-label: accuracy; multi-label:
        mAP of probekit.probes.multilabel); keep the best checkpoint by ``probe_metric`` (default:
        weighted kNN at k = 20)
        checkpoint (``last.pt``, ``best.pt``), a log line, ``log.json``

Mixed precision is bf16 autocast on CUDA (no loss scaling needed: bf16 has float32's exponent
range); the losses compute their similarities in float32, and the encoders keep in float32 what
bf16 cannot hold (GE2E's LSTMs run outside autocast, CREPE sums its frames in float32: see
:mod:`tuner.encoders`). Checkpoints are plain ``state_dict``s written with ``torch.save``
through probekit's atomic writer (:func:`probekit.files.write_atomically`: a crash mid-write
leaves the previous file) and read back only with ``torch.load(..., weights_only=True)``.
Everything is seeded: two runs with the same inputs and config, or a run resumed from
``last.pt``, end with the same weights on the CPU; ``last.pt`` holds the random generators of
every rank, and each rank resumes its own.

On CUDA the process's current device is set to the training device before anything is
allocated (:func:`tuner.distributed.init_distributed` under torchrun, :func:`fit` otherwise), so
the probes' neighbour search, which probekit runs on the current CUDA device, runs on the
training GPU; CPU training searches on the CPU (see :func:`probe_backend`).

References: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020; Loshchilov &
Hutter, "Decoupled Weight Decay Regularization" (AdamW) and "SGDR" (cosine schedule), ICLR 2019
and 2017; arXiv 2309.11895 (the two-stage framework and its cross-entropy baseline).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from tuner.data import collate_for, dataset_of
from tuner.distributed import (
    any_rank_failed,
    check_process_group,
    gather,
    gather_with_grad,
    init_distributed,
    is_distributed,
    mean_over_ranks,
    select_device,
)
from tuner.embed import autocast, embed, encode, to_device
from tuner.finite import TrainingDiverged, check_setting, check_tensors, nonfinite_tensors
from tuner.heads import ProjectionHead
from tuner.losses import JaccardSupConLoss, SupConLoss, check_temperature
from tuner.sampling import MPerClassSampler, RankShard, ShuffledBatches

OBJECTIVES = ("supcon", "jaccard", "ce")
CHECKPOINT_FORMAT = "tuner-checkpoint-1"
DIVERGENCE_CHECK_STEPS = 20
"""The losses are checked for NaN / inf every this many steps and at the end of every epoch:
often enough that a diverged run stops soon, rarely enough that the GPU is not made to wait
for the host on every step (the check reads the losses back)."""


@dataclass
class TrainConfig:
    """Settings of :func:`fit`.

    objective : ``"supcon"`` (single-label), ``"jaccard"`` (multi-label; equals SupCon on
        single labels) or ``"ce"`` (cross-entropy on a linear classifier, the paper's baseline;
        binary cross-entropy for multi-label data).
    batch_size : the global batch, over all processes; a multiple of ``m`` for SupCon and of
        the number of processes.
    m : samples per class in a SupCon batch (>= 2: every anchor has a positive).
    head_dim : output size of the projection head; None: no head, the contrastive loss sees
        the encoder output itself (small encoders learn more this way: a head can absorb the
        whole task and leave the encoder's geometry unchanged).
    batches_per_epoch : default ``ceil(N / batch_size)``.
    warmup_epochs : linear warm-up length, then cosine decay to 0 at the last step.
    clip_norm : gradient-norm clipping (None: off).
    amp : bf16 autocast on CUDA (ignored on the CPU).
    device : ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` (under torchrun: each
        process's own GPU, ``cuda:<local rank>``) or ``"cuda:N"`` (one process). It also picks
        the process-group backend (NCCL for CUDA, gloo for the CPU) when :func:`fit` starts
        the group, and where the probes search for neighbours.
    lr : AdamW's peak learning rate, finite and > 0; weight_decay : finite and >= 0.
    temperature : of the contrastive losses, finite and >= ``tuner.losses.MIN_TEMPERATURE``
        (1e-4; why there: its docstring).
    probe_every : probe every this many epochs (and after the last); 0 turns probing off.
    probe_metric : ``"knn_weighted@K"``, ``"knn_majority@K"`` or ``"linear"``: the
        validation score that picks the best checkpoint: accuracy for single-label data, mAP
        for multi-label data (probekit's multi-label probes, whose kNN has only the weighted
        vote, so ``knn_majority@K`` is single-label only).
    probe_linear : run the linear probe too (it is logged even when it does not choose; the
        multi-label probe always runs it).
    probe_max_train : training rows embedded as the probes' training set (a seeded sample).
    num_workers : DataLoader worker processes, for training and for the probes' embedding.
    embed_from : probe the ``"encoder"`` output (default) or the ``"head"`` output.
    restore_best : after training, load the best checkpoint's weights into the encoder (and
        head) when a probe chose one.
    """

    objective: str = "supcon"
    epochs: int = 10
    batch_size: int = 64
    m: int = 4
    batches_per_epoch: int | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    temperature: float = 0.07
    head_dim: int | None = 128
    clip_norm: float | None = 1.0
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    probe_every: int = 1
    probe_metric: str = "knn_weighted@20"
    probe_linear: bool = True
    probe_max_train: int = 10_000
    embed_from: str = "encoder"
    embed_batch_size: int = 256
    num_workers: int = 0
    progress: bool = True
    verbose: bool = True
    restore_best: bool = True


@dataclass
class TrainResult:
    """What :func:`fit` returns: the per-epoch records (loss, lr, probe scores, seconds), the
    best epoch and score by ``probe_metric`` (None without probes) and the checkpoint paths
    (None without ``out_dir``). ``encoder`` and ``head`` are the trained modules."""

    encoder: nn.Module
    head: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None


class EncoderWithHead(nn.Module):
    """``inputs -> (embedding, head(embedding))``: one module for DDP to wrap."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, inputs):
        embedding = encode(self.encoder, inputs)
        return embedding, self.head(embedding)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``:
    ``½ (1 + cos(π (step − warmup) / (total − warmup)))``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def check_config(config: TrainConfig) -> None:
    """One-line ValueErrors for settings that cannot work: an unknown objective, probe metric
    or ``embed_from``; ``epochs < 1`` or ``batch_size < 2``; a learning rate that is not
    finite and positive (``inf`` makes the first step write NaN into every weight); a weight
    decay or warm-up that is not finite and non-negative; a clip norm that is not positive; a
    temperature that is not finite or below ``MIN_TEMPERATURE`` (see
    :func:`tuner.losses.check_temperature`)."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, "
                         f"got {config.objective}")
    if config.epochs < 1 or config.batch_size < 2:
        raise ValueError("epochs must be >= 1 and batch_size >= 2")
    if config.embed_from not in ("encoder", "head"):
        raise ValueError(f"embed_from must be encoder or head, got {config.embed_from}")
    check_setting("lr", config.lr, low=0.0, low_open=True)
    check_setting("weight_decay", config.weight_decay, low=0.0)
    check_setting("warmup_epochs", config.warmup_epochs, low=0.0)
    if config.clip_norm is not None and not config.clip_norm > 0:
        raise ValueError(f"clip_norm must be positive (or None: no clipping), "
                         f"got {config.clip_norm}")
    check_temperature(config.temperature)
    parse_probe_metric(config.probe_metric)


def parse_probe_metric(name: str) -> tuple[str, int | None]:
    """``"knn_weighted@20"`` -> ("weighted", 20); ``"linear"`` -> ("linear", None)."""
    if name == "linear":
        return "linear", None
    vote, _, k = name.partition("@")
    if vote in ("knn_weighted", "knn_majority") and k.isdigit() and int(k) >= 1:
        return vote.removeprefix("knn_"), int(k)
    raise ValueError(f"probe_metric must be knn_weighted@K, knn_majority@K or linear, "
                     f"got {name}")


def make_head(config: TrainConfig, dim: int, n_classes: int) -> nn.Module:
    """The projection head (contrastive objectives) or the linear classifier (cross-entropy)."""
    if config.objective == "ce":
        return nn.Linear(dim, n_classes)
    if config.head_dim is None:
        return nn.Identity()
    return ProjectionHead(dim, config.head_dim)


def make_loss(config: TrainConfig, multi_label: bool):
    """``loss(outputs, targets)`` on this rank's rows; contrastive losses gather every rank's
    rows first so that the negatives span the global batch."""
    if config.objective == "ce":
        criterion = nn.BCEWithLogitsLoss() if multi_label else nn.CrossEntropyLoss()
        return lambda outputs, targets: criterion(outputs.float(), targets)
    if config.objective == "supcon" and multi_label:
        raise ValueError("supcon needs one label per example; use objective jaccard for "
                         "multi-label data")
    # Jaccard weights of one-hot labels are SupCon's mask exactly: single labels use SupCon
    contrastive = (JaccardSupConLoss if multi_label else SupConLoss)(config.temperature)
    return lambda outputs, targets: contrastive(gather_with_grad(outputs.float()),
                                                gather(targets))


def batch_sampler(targets: np.ndarray, config: TrainConfig):
    """The global batches: m per class for SupCon, seeded shuffles otherwise."""
    n = len(targets)
    per_epoch = config.batches_per_epoch or max(1, math.ceil(n / config.batch_size))
    if config.objective in ("supcon", "jaccard") and targets.ndim == 1:
        return MPerClassSampler(targets, m=config.m, batch_size=config.batch_size,
                                batches_per_epoch=per_epoch, seed=config.seed)
    return ShuffledBatches(n, config.batch_size, per_epoch, seed=config.seed)


def fit(encoder: nn.Module, train_data, val_data=None, config: TrainConfig | None = None, *,
        head: nn.Module | None = None, out_dir: str | Path | None = None,
        resume: str | Path | bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Fine-tune ``encoder`` on ``train_data``; see the module docstring for the loop.

    Parameters
    ----------
    encoder : maps a batch to (B, D): a tensor batch (``encoder(x)``) or, for audio encoders
        with a ``preprocess`` method, a dict of model inputs (``encoder(**inputs)``).
    train_data, val_data : Datasets with ``targets`` (:class:`tuner.data.ArrayDataset`,
        :class:`tuner.data.AudioDataset`) or ``(inputs, labels)`` tuples of arrays/tensors.
        Without ``val_data`` there are no probes and the last epoch is kept.
    config : :class:`TrainConfig`.
    head : the module the loss sees (default: a projection head for contrastive objectives, a
        linear classifier for cross-entropy).
    out_dir : where ``last.pt``, ``best.pt`` and ``log.json`` go (rank 0 writes them).
    resume : a checkpoint path, or True for ``out_dir/last.pt``: continue that run.
    on_epoch : called (on rank 0) with every epoch's record, e.g. to log it elsewhere.

    Under torchrun the process group is started from the environment (unless one is running:
    it must suit ``config.device``); ``batch_size`` is the global batch and every process
    trains on its slice of it. Every rank must get the same arguments (``out_dir`` included:
    every rank sends rank 0 its random generators' states for ``last.pt``).
    """
    config = config or TrainConfig()
    check_config(config)
    rank, world, local_rank = init_distributed(config.device)
    device = select_device(config.device, local_rank, world)
    check_process_group(device)
    if device.type == "cuda":
        # before anything allocates: "cuda" (the current device, which probekit's search and
        # torch.cuda calls without an index use) is now the training GPU
        torch.cuda.set_device(device)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} processes")
    train_set = _as_dataset(train_data, "training")
    val_set = (_as_dataset(val_data, "validation", getattr(train_set, "classes", None))
               if val_data is not None else None)
    targets = np.asarray(train_set.targets)
    multi_label = targets.ndim == 2
    n_classes = targets.shape[1] if multi_label else int(targets.max()) + 1
    loss_fn = make_loss(config, multi_label)
    sampler = batch_sampler(targets, config)
    collate = collate_for(train_set, encoder)
    torch.manual_seed(config.seed)
    if head is None:
        head = make_head(config, _output_dim(encoder, train_set, collate), n_classes)
    model = EncoderWithHead(encoder, head).to(device)
    # dropout (and numpy/random users such as wav2vec2's SpecAugment) differ across ranks, not
    # across runs
    torch.manual_seed(config.seed + rank)
    np.random.seed((config.seed + rank) % 2**32)  # noqa: NPY002 (the global one others use)
    random.seed(config.seed + rank)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError("the encoder and head have no trainable parameters")
    wrapped = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps = len(sampler)
    total, warmup = config.epochs * steps, round(config.warmup_epochs * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total))
    loader = DataLoader(train_set, batch_sampler=RankShard(sampler, rank, world),
                        collate_fn=collate, num_workers=config.num_workers)
    out_dir = Path(out_dir) if out_dir is not None else None
    result = TrainResult(encoder=encoder, head=head)
    probing = val_set is not None and config.probe_every > 0
    if probing:
        _check_probe_size(config, train_set, val_set)
    if out_dir is not None and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable folder fails now, not later
    start = 0
    if resume:
        if resume is True and out_dir is None:
            raise ValueError("resume=True reads out_dir/last.pt: give out_dir (or a path)")
        path = out_dir / "last.pt" if resume is True else Path(resume)
        start = _restore(load_checkpoint(path), model, optimizer, scheduler, result, device,
                         rank)
        if out_dir is not None and (out_dir / "last.pt").is_file():
            result.last_checkpoint = out_dir / "last.pt"
        best_file = (out_dir or path.parent) / "best.pt"
        if result.best_epoch is not None and best_file.is_file():
            result.best_checkpoint = best_file
        _say(config, rank, f"resumed from {path} after epoch {start}")
    best_state = None
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        train_mode(model)
        losses, checked = [], 0
        for inputs, batch_targets in _progress(loader, config, rank, epoch):
            inputs, batch_targets = to_device(inputs, device), batch_targets.to(device)
            with autocast(device, config.amp):
                _, outputs = wrapped(inputs)
            loss = loss_fn(outputs, batch_targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_norm is not None:
                nn.utils.clip_grad_norm_(trainable, config.clip_norm)
            optimizer.step()
            last_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            losses.append(loss.detach())  # read back every DIVERGENCE_CHECK_STEPS steps only
            if len(losses) - checked >= DIVERGENCE_CHECK_STEPS:
                _check_losses(losses, checked, epoch, steps, device, result, config)
                checked = len(losses)
        _check_losses(losses, checked, epoch, steps, device, result, config)
        _check_weights(model, epoch, result, config)
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                  "loss": mean_over_ranks(torch.stack(losses).double().mean().item(), device),
                  "lr": last_lr}
        due = probing and ((epoch + 1) % config.probe_every == 0 or epoch + 1 == config.epochs)
        failure = None
        if rank == 0:
            try:
                if due:
                    record["probe"] = probe_scores(model, train_set, val_set, config, device)
                    score = record["probe"][config.probe_metric]
                    if result.best_score is None or score > result.best_score:
                        result.best_score, result.best_epoch = score, epoch + 1
                        best_state = _weights(model) if out_dir is None else None
                        result.best_checkpoint = None
                        if out_dir is not None:
                            result.best_checkpoint = save_checkpoint(
                                out_dir / "best.pt", _payload(model, None, None, result,
                                                              config, train_set, epoch + 1))
                record["seconds"] = round(time.perf_counter() - began, 3)
                result.history.append(record)
                _say(config, rank, log_line(record, config, probe_measure(train_set)))
                if on_epoch is not None:
                    on_epoch(record)
            except BaseException as error:  # every rank must learn of it, or the others hang
                failure = error
        else:
            record["seconds"] = round(time.perf_counter() - began, 3)
            result.history.append(record)
        _stop_if_any_failed(failure, device)
        if out_dir is not None:
            # every rank's generators, taken after rank 0's probe (which draws from torch's
            # generator) so that a resumed run continues exactly where this one goes on
            rng = _gather_rng_states(device)
            if rank == 0:
                try:
                    result.last_checkpoint = save_checkpoint(
                        out_dir / "last.pt", _payload(model, optimizer, scheduler, result,
                                                      config, train_set, epoch + 1, rng))
                    write_log(out_dir / "log.json", result, config, train_set)
                except BaseException as error:
                    failure = error
            _stop_if_any_failed(failure, device)
    if config.restore_best and rank == 0 and result.best_epoch is not None:
        if best_state is not None:
            model.load_state_dict(best_state)
        elif result.best_checkpoint is not None:
            model.load_state_dict(_model_state(load_checkpoint(result.best_checkpoint)))
    model.eval()
    return result


def _stop_if_any_failed(failure: BaseException | None, device: torch.device) -> None:
    """Raise ``failure`` on the rank that had it and a RuntimeError on the others (an
    all-reduce, so every rank stops together instead of hanging in the next collective)."""
    if any_rank_failed(failure is not None, device):
        if failure is not None:
            raise failure
        raise RuntimeError("rank 0 failed while probing or writing checkpoints; its error "
                           "is above")


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except that submodules whose parameters are all frozen run as in
    inference (BatchNorm statistics stay put, no dropout inside them): a frozen block is a
    fixed function, as after ``freeze_all_but_last``."""
    model.train()
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(parameter.requires_grad for parameter in parameters):
            module.eval()


def _check_losses(losses: list[torch.Tensor], start: int, epoch: int, steps: int,
                  device: torch.device, result: TrainResult, config: TrainConfig) -> None:
    """Stop training (:class:`TrainingDiverged`, on every rank) when a loss from step
    ``start`` of this epoch on is NaN or infinite; the message names the first such step."""
    first = None
    if start < len(losses):
        finite = torch.isfinite(torch.stack(losses[start:])).cpu()
        if not bool(finite.all()):
            first = start + int(torch.nonzero(~finite)[0, 0])
    if not any_rank_failed(first is not None, device):
        return
    if first is None:
        where = "on another process"
    else:
        where = (f"({float(losses[first])}) at epoch {epoch + 1}, step {first + 1} of {steps} "
                 f"(global step {epoch * steps + first + 1})")
    raise TrainingDiverged(f"training diverged: the loss is not finite {where}; "
                           f"{_kept(result)}; {_advice(config)}")


def _check_weights(model: nn.Module, epoch: int, result: TrainResult,
                   config: TrainConfig) -> None:
    """After an epoch's last step, before any probe or checkpoint: every weight is finite (a
    non-finite gradient on the last step leaves NaN weights behind a finite loss)."""
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise TrainingDiverged(f"training diverged at the end of epoch {epoch + 1}: "
                               f"{len(bad)} weight tensor(s) hold NaN or infinite values "
                               f"({shown}); {_kept(result)}; {_advice(config)}")


def _kept(result: TrainResult) -> str:
    """What the checkpoints on disk hold after a divergence (they are never overwritten)."""
    if result.last_checkpoint is None:
        return "no checkpoint was written"
    epoch = result.history[-1]["epoch"] if result.history else "?"
    kept = f"{result.last_checkpoint} keeps epoch {epoch}"
    if result.best_checkpoint is not None:
        kept += f", {result.best_checkpoint.name} epoch {result.best_epoch}"
    return kept


def _advice(config: TrainConfig) -> str:
    return (f"lower the learning rate (lr {config.lr:g}) or raise the temperature "
            f"({config.temperature:g}), and check the inputs")


def probe_scores(model: EncoderWithHead, train_set, val_set, config: TrainConfig,
                 device: torch.device) -> dict[str, float]:
    """Validation scores of probekit's probes on the current embeddings, with a seeded sample
    of at most ``probe_max_train`` training rows as the probes' training set.

    Single-label data: accuracies of the kNN probe (both votes at k = 1, 5, 10, 20 and the k of
    ``probe_metric``) and of the linear probe. Multi-label data (``(N, C)`` targets): the mAP
    of probekit's multi-label probes (:func:`probekit.dual_probe` of the tag matrix: the
    similarity-weighted kNN tag scores at those k, under the names ``knn_weighted@K``, and the
    one-vs-rest linear probe, ``linear``), without the geometry diagnostics.

    The rows are embedded on ``device`` with ``config.num_workers`` loader workers; the
    neighbour search runs where :func:`probe_backend` says, on ``device`` itself when it is a
    GPU (the current CUDA device is set to it around the probes).
    """
    import probekit

    rows = np.arange(len(train_set))
    if len(rows) > config.probe_max_train:
        rows = np.sort(np.random.default_rng(config.seed).choice(
            len(rows), config.probe_max_train, replace=False))
    head = model.head if config.embed_from == "head" else None
    options = {"head": head, "batch_size": config.embed_batch_size, "device": device,
               "amp": config.amp, "num_workers": config.num_workers}
    with _current_device(device):
        train_rows = embed(model.encoder, Subset(train_set, rows.tolist()), **options)
        val_rows = embed(model.encoder, val_set, **options)
        y_train = np.asarray(train_set.targets)[rows]
        y_val = np.asarray(val_set.targets)
        _, metric_k = parse_probe_metric(config.probe_metric)
        ks = sorted({1, 5, 10, 20} | ({metric_k} if metric_k else set()))
        backend = probe_backend(device)
        if y_train.ndim == 2:
            return _checked(_multilabel_scores(train_rows, y_train, val_rows, y_val, ks, config,
                                               backend), config, rows)
        ks = [k for k in ks if k <= len(rows)]
        knn = probekit.knn_probe(train_rows, y_train, val_rows, y_val, k=ks, n_bootstrap=10,
                                 seed=config.seed, backend=backend)
    scores = {f"knn_{vote}@{k}": float(getattr(knn, vote)[k].accuracy)
              for vote in ("weighted", "majority") for k in knn.k}
    if config.probe_linear or config.probe_metric == "linear":
        linear = probekit.linear_probe(train_rows, y_train, val_rows, y_val,
                                       n_bootstrap=10, seed=config.seed)
        scores["linear"] = float(linear.scores.accuracy)
    return _checked(scores, config, rows)


def _checked(scores: dict[str, float], config: TrainConfig, rows: np.ndarray) -> dict[str, float]:
    if config.probe_metric not in scores:
        raise ValueError(f"probe metric {config.probe_metric} could not be computed: the probe "
                         f"training set has {len(rows)} rows")
    return scores


def probe_backend(device: torch.device) -> str:
    """The probekit search backend of the probes in the loop: ``"auto"`` when training on a
    GPU (faiss-gpu, else torch, both on the current CUDA device, which :func:`fit` has set to
    the training GPU), and a CPU backend when training on the CPU (faiss-cpu, else numpy), so
    that CPU training never touches a GPU."""
    from probekit.neighbours import available_backends

    if device.type == "cuda":
        return "auto"
    return "faiss-cpu" if "faiss-cpu" in available_backends() else "numpy"


def _current_device(device: torch.device):
    """``torch.cuda.device(device)`` for a GPU (a no-op after fit's ``set_device``, kept so
    that a probe called on its own also searches there), nothing for the CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _multilabel_scores(train_rows: np.ndarray, y_train: np.ndarray, val_rows: np.ndarray,
                       y_val: np.ndarray, ks: list[int], config: TrainConfig,
                       backend: str = "auto") -> dict[str, float]:
    """mAP of probekit's multi-label kNN (weighted vote, every k that fits) and linear probes,
    scored on the validation rows (see :func:`probe_scores`)."""
    import probekit

    report = probekit.dual_probe(train_rows, y_train, X_test=val_rows, y_test=y_val, k=ks,
                                 seed=config.seed, n_bootstrap=10, geometry=False,
                                 backend=backend)
    scores = {f"knn_weighted@{k}": report.knn["weighted"][str(k)]["map"]
              for k in report.protocol["k"]}
    scores["linear"] = report.linear["map"]
    return {name: float(value) for name, value in scores.items() if value is not None}


def _probe_rows(config: TrainConfig, train_set) -> int:
    """Training rows the kNN probe searches: the probe sample, less the multi-label probe's
    validation split (a tenth, at least 1), which it holds out to tune thresholds and C."""
    available = min(len(train_set), config.probe_max_train)
    if np.asarray(train_set.targets).ndim == 2:
        available -= max(1, int(round(0.1 * available)))
    return available


def _check_probe_size(config: TrainConfig, train_set, val_set) -> None:
    """Before any training: the probe metric's k must fit the probes' training rows; for
    multi-label data the metric must be one the multi-label probes compute and the validation
    set must carry a tag that occurs in training."""
    vote, metric_k = parse_probe_metric(config.probe_metric)
    targets = np.asarray(train_set.targets)
    if targets.ndim == 2:
        if vote == "majority":
            raise ValueError(f"probe_metric {config.probe_metric} is single-label only: the "
                             "multi-label kNN probe has the weighted vote (knn_weighted@K) "
                             "and linear")
        learnable = targets.any(axis=0)
        if not np.asarray(val_set.targets)[:, learnable].any():
            raise ValueError("no tag of the validation set occurs in the training set: the "
                             "multi-label probes have nothing to score")
    available = _probe_rows(config, train_set)
    if metric_k is not None and metric_k > available:
        raise ValueError(f"probe_metric {config.probe_metric} needs at least {metric_k} "
                         f"training rows for the probe; there are {available}: choose a "
                         "smaller k")


def log_line(record: dict, config: TrainConfig, measure: str = "accuracy") -> str:
    """``epoch 3/10  loss 2.1034  lr 9.05e-05  knn_weighted@20 0.812  linear 0.840  4.2 s``
    (``knn_weighted@20 mAP 0.412`` ... when the probes' ``measure`` is ``"map"``)."""
    parts = [f"epoch {record['epoch']}/{config.epochs}", f"loss {record['loss']:.4f}",
             f"lr {record['lr']:.2e}"]
    probe = record.get("probe", {})
    unit = " mAP" if measure == "map" else ""
    for name in dict.fromkeys([config.probe_metric, "linear"]):
        if name in probe:
            parts.append(f"{name}{unit} {probe[name]:.3f}")
    parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)


def probe_measure(train_set) -> str:
    """What the probe scores are: ``"map"`` for multi-label targets, else ``"accuracy"``."""
    return "map" if np.asarray(train_set.targets).ndim == 2 else "accuracy"


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """``torch.save(payload)`` to ``path`` through :func:`probekit.files.write_atomically`
    (a temporary file beside it, flushed to disk, given the usual permissions, renamed over
    it): a crash or an error while writing leaves the previous file and no temporary one.
    A payload with a NaN or infinite tensor is refused (:class:`tuner.finite.NonFiniteError`)
    before anything is written, so a good checkpoint is never replaced by a diverged one."""
    from probekit.files import write_atomically

    path = Path(path)
    check_tensors(payload, f"the state to save as {path.name}", "save")
    return write_atomically(path, lambda stream: torch.save(payload, stream))


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :func:`fit`, read with ``weights_only=True`` (no code runs).
    One with a NaN or infinite tensor in its weights (or optimiser state) is refused with
    :class:`tuner.finite.NonFiniteError`: its embeddings would all be NaN."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # unpickling errors come in many types
        raise ValueError(f"{path.name} is not a tuner checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path.name} is not a tuner checkpoint (no '{CHECKPOINT_FORMAT}' "
                         "marker)")
    check_tensors({name: payload.get(name) for name in ("encoder", "head", "optimizer")},
                  f"checkpoint {path.name}")
    return payload


def load_encoder(encoder: nn.Module, path: str | Path, head: nn.Module | None = None) -> dict:
    """Load a checkpoint's encoder (and head) weights into the given modules; returns the
    checkpoint (its ``config``, ``classes``, ``epoch``, ``best_score`` ...)."""
    payload = load_checkpoint(path)
    encoder.load_state_dict(payload["encoder"])
    if head is not None:
        head.load_state_dict(payload["head"])
    return payload


def write_log(path: Path, result: TrainResult, config: TrainConfig, train_set) -> None:
    """``log.json`` (atomically): the config, the classes, every epoch's record and the best
    epoch."""
    from probekit.files import write_atomically

    document = {"config": dataclasses.asdict(config), "classes": _classes(train_set),
                "epochs": result.history,
                "best": {"epoch": result.best_epoch, "metric": config.probe_metric,
                         "measure": probe_measure(train_set), "score": result.best_score}}
    write_atomically(path, json.dumps(document, indent=2) + "\n")


def _as_dataset(data, what: str, classes=None):
    """A Dataset with ``targets``; (inputs, labels) pairs become an ArrayDataset whose labels are
    encoded with ``classes`` (the training set's, for a validation set)."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"the {what} data must be a Dataset or an (inputs, labels) pair")
        dataset = dataset_of(data[0], data[1], classes)
    else:
        dataset = dataset_of(data)
    if not hasattr(dataset, "targets"):
        raise ValueError(f"the {what} dataset needs a 'targets' attribute (class ids or "
                         "multi-hot rows); use tuner.data.ArrayDataset or AudioDataset")
    if len(dataset) == 0:
        raise ValueError(f"the {what} dataset is empty")
    return dataset


@torch.no_grad()
def _output_dim(encoder: nn.Module, dataset, collate) -> int:
    """The encoder's embedding size: its ``dim`` attribute, else one forward pass on CPU."""
    if isinstance(getattr(encoder, "dim", None), int):
        return encoder.dim
    items = [dataset[index] for index in range(min(2, len(dataset)))]
    inputs, _ = (collate or torch.utils.data.default_collate)(items)
    mode = encoder.training
    encoder.eval()
    try:
        return int(encode(encoder, inputs).shape[-1])
    finally:
        encoder.train(mode)


def _progress(loader, config: TrainConfig, rank: int, epoch: int):
    if not (config.progress and rank == 0):
        return loader
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return loader
    return tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                disable=None, file=sys.stderr)


def _say(config: TrainConfig, rank: int, line: str) -> None:
    if config.verbose and rank == 0:
        print(line, file=sys.stderr, flush=True)


def _classes(dataset) -> list:
    return [c if isinstance(c, (str, int, float)) else str(c)
            for c in getattr(dataset, "classes", [])]


def _weights(model: nn.Module) -> dict:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def _model_state(payload: dict) -> dict:
    return {**{f"encoder.{name}": value for name, value in payload["encoder"].items()},
            **{f"head.{name}": value for name, value in payload["head"].items()}}


def _payload(model: EncoderWithHead, optimizer, scheduler, result: TrainResult,
             config: TrainConfig, train_set, epoch: int, rng: list[dict] | None = None) -> dict:
    """A checkpoint: the weights (``best.pt``), and with ``optimizer`` what resuming needs
    (``last.pt``): optimiser, schedule, history and the random generators of every rank,
    ``rng_ranks`` (rank r's at index r; ``rng`` repeats rank 0's, the layout of earlier
    versions, which they resume from)."""
    payload = {"format": CHECKPOINT_FORMAT, "epoch": epoch,
               "encoder": model.encoder.state_dict(), "head": model.head.state_dict(),
               "config": dataclasses.asdict(config), "classes": _classes(train_set),
               "best_epoch": result.best_epoch, "best_score": result.best_score}
    if optimizer is not None:
        payload.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                       history=result.history, rng=rng[0], rng_ranks=list(rng))
    return payload


def _restore(payload: dict, model, optimizer, scheduler, result: TrainResult,
             device: torch.device, rank: int = 0) -> int:
    """Load ``last.pt`` into the run; every rank restores its own random generators
    (``rng_ranks[rank]``). A rank the checkpoint has no states for (more processes than the run
    that wrote it, or a checkpoint of an earlier version, which kept rank 0's only) keeps the
    fresh seeding of :func:`fit` (``seed + rank``)."""
    if "optimizer" not in payload:
        raise ValueError("this checkpoint holds weights only (best.pt); resume from last.pt")
    model.load_state_dict(_model_state(payload))
    model.to(device)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    ranks = payload.get("rng_ranks") or [payload["rng"]]
    if rank < len(ranks):
        _set_rng_states(ranks[rank], device)
    result.history = list(payload["history"])
    result.best_epoch, result.best_score = payload["best_epoch"], payload["best_score"]
    return int(payload["epoch"])


def _gather_rng_states(device: torch.device) -> list[dict]:
    """Every rank's :func:`_rng_states`, in rank order (an all-gather: every rank calls it)."""
    own = _rng_states(device)
    if not is_distributed():
        return [own]
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, own)
    return gathered


def _rng_states(device: torch.device) -> dict:
    """This process's generator states: torch's CPU generator, the training GPU's (only that
    one: touching the others would open a CUDA context on each), numpy's global and Python's,
    in types that ``torch.load(weights_only=True)`` reads back."""
    _, keys, position, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    states = {"torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)),
                        "position": int(position), "has_gauss": int(has_gauss),
                        "gauss": float(gauss)},
              "python": random.getstate()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        ("MT19937", keys, numpy["position"], numpy["has_gauss"], numpy["gauss"]))
    random.setstate(states["python"])
    cuda = states.get("cuda")
    if cuda is not None and device.type == "cuda":
        if isinstance(cuda, (list, tuple)):  # earlier versions kept every device's state
            cuda = cuda[device.index] if device.index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
