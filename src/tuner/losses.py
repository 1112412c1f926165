"""Contrastive losses: supervised (SupCon), multi-label (Jaccard-weighted SupCon), SimCLR.

All three are one computation with different positive weights ``w_ij`` (the masks carry the
supervision, as in pytorch-metric-learning's losses)::

    s_ij      = ẑᵢ·ẑⱼ / T                 (ẑ = z/‖z‖; float32 even under autocast, float64
                                            for float64 input)
    log p_ij  = s_ij − log Σ_{a≠i} exp(s_ia)
    loss_i    = − Σ_j w_ij log p_ij / Σ_j w_ij      (anchors with Σ_j w_ij = 0 are skipped)
    loss      = mean of loss_i over the anchors that have a positive (0 when none has one)

with ``w_ii = 0``. SupCon: ``w_ij = 1`` for the same class; Jaccard SupCon:
``w_ij = |Yᵢ ∩ Yⱼ| / |Yᵢ ∪ Yⱼ|``; NT-Xent: ``w_ij = 1`` for the other views of the same sample.

References: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (the L_out form);
Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
ICML 2020; the Jaccard weighting follows arXiv 2309.11895 (multi-label audio tagging).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _flatten_views(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, D) or (B, V, D) -> (V·B, D) ordered view-major (all first views, then the second
    ...), and V."""
    if features.dim() == 2:
        return features, 1
    if features.dim() != 3:
        raise ValueError(f"features must be (B, D) or (B, V, D), got shape {tuple(features.shape)}")
    batch, views, dim = features.shape
    return features.transpose(0, 1).reshape(views * batch, dim), views


MIN_TEMPERATURE = 1e-4
"""The smallest temperature accepted. Cosine similarities lie in [-1, 1], so the logits
``s/T`` lie within ±1/T: at T = 1e-4 that is ±1e4, which the log-sum-exp (it subtracts each
row's maximum) handles exactly in float32, but the gradients ``(p - w)/T`` already reach 1e4
and float32 rounding of a cosine (~6e-8) becomes ~6e-4 of logit noise. Below it the softmax is
a hard maximum (only the nearest negative gets a gradient) and, as T -> 0, ``1/T`` overflows:
T = 1e-300 gives infinite logits and a NaN loss. SupCon and SimCLR use 0.05-0.5."""


def check_temperature(temperature) -> float:
    """``temperature`` as a float, or a one-line ValueError unless it is finite and
    >= :data:`MIN_TEMPERATURE`."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= MIN_TEMPERATURE):
        raise ValueError(f"temperature must be a finite number >= {MIN_TEMPERATURE:g} (logits "
                         f"are cosine / temperature), got {temperature}")
    return value


class _WeightedContrastive(nn.Module):
    """The shared computation; subclasses build the positive weights."""

    def __init__(self, temperature: float = 0.07):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def _compute_loss(self, features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``features`` (N, D) any dtype; ``weights`` (N, N) non-negative positive weights."""
        device_type = features.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            precision = torch.float64 if features.dtype == torch.float64 else torch.float32
            unit = F.normalize(features.to(precision), dim=1)
            self_mask = torch.eye(unit.shape[0], dtype=torch.bool, device=unit.device)
            logits = (unit @ unit.T / self.temperature).masked_fill(self_mask, float("-inf"))
            # logsumexp subtracts each row's maximum before exponentiating: exp stays finite
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            log_prob = log_prob.masked_fill(self_mask, 0.0)
            weights = weights.to(precision).masked_fill(self_mask, 0.0)
            totals = weights.sum(dim=1)
            has_positive = (totals > 0).to(precision)
            per_anchor = (weights * log_prob).sum(dim=1) / torch.where(totals > 0, totals, 1.0)
            # anchors without a positive drop out of the mean (0 when none has one); no
            # host synchronisation, so the step stays asynchronous on a GPU
            return -(per_anchor * has_positive).sum() / has_positive.sum().clamp(min=1.0)


class SupConLoss(_WeightedContrastive):
    """Supervised contrastive loss (Khosla et al. 2020, L_out).

    ``loss(features, labels)``: features (B, D) or (B, V, D) with V views per sample, labels
    (B,) integer class ids. Every other sample (and view) of the anchor's class is a positive.
    """

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat, views = _flatten_views(features)
        labels = torch.as_tensor(labels, device=flat.device).reshape(-1)
        if labels.shape[0] * views != flat.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {flat.shape[0] // views} samples")
        labels = labels.repeat(views)
        return self._compute_loss(flat, labels[:, None] == labels[None, :])


class JaccardSupConLoss(_WeightedContrastive):
    """Multi-label supervised contrastive loss: pair (i, j) is a positive with weight
    ``|Yᵢ ∩ Yⱼ| / |Yᵢ ∪ Yⱼ|`` (0 when they share no label, so they are only negatives).

    ``loss(features, labels)``: labels (B, C) multi-hot (0/1, any dtype). With one-hot labels
    it equals :class:`SupConLoss` exactly.
    """

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        flat, views = _flatten_views(features)
        labels = torch.as_tensor(labels, device=flat.device)
        if labels.dim() != 2 or labels.shape[0] * views != flat.shape[0]:
            raise ValueError(f"labels must be (B, C) multi-hot for {flat.shape[0] // views} "
                             f"samples, got shape {tuple(labels.shape)}")
        precision = torch.float64 if flat.dtype == torch.float64 else torch.float32
        hot = (labels != 0).to(precision).repeat(views, 1)
        shared = hot @ hot.T
        union = hot.sum(dim=1, keepdim=True) + hot.sum(dim=1) - shared
        jaccard = torch.where(union > 0, shared / union.clamp(min=1.0), torch.zeros_like(shared))
        return self._compute_loss(flat, jaccard)


class NTXentLoss(_WeightedContrastive):
    """SimCLR's NT-Xent loss for unlabelled views: ``loss(features)`` with features
    (B, V, D), V >= 2; the other views of the same sample are the positives."""

    def __init__(self, temperature: float = 0.5):
        super().__init__(temperature)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3 or features.shape[1] < 2:
            raise ValueError("NT-Xent needs features of shape (B, V, D) with V >= 2 views")
        flat, views = _flatten_views(features)
        sample = torch.arange(features.shape[0], device=flat.device).repeat(views)
        return self._compute_loss(flat, sample[:, None] == sample[None, :])
