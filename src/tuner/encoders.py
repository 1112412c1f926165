"""Encoders to tune: any ``torch.nn.Module`` with pooling, and partial freezing.

An encoder maps a batch to (B, D) or to frame/token features (B, T, D), possibly inside an
output object with ``last_hidden_state`` (Hugging Face models); :class:`PooledEncoder` turns
that into one embedding per example. Pre-trained audio adapters (the GE2E speech encoder of the
Resemblyzer wheel, Hugging Face AST / wav2vec2 / HuBERT from a local directory) build on this
(issue 5, in progress).
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("mean", "max", "cls")


def pool(features: torch.Tensor, mode: str = "mean",
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean or max over the valid frames (``mask`` (B, T), 1 = valid;
    all frames when None), or the first token (``cls``). (B, D) passes through."""
    if mode not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {mode}")
    if features.dim() == 2:
        return features
    if features.dim() != 3:
        raise ValueError(f"encoder output must be (B, D) or (B, T, D), got {tuple(features.shape)}")
    if mode == "cls":
        return features[:, 0]
    if mask is None:
        return features.mean(dim=1) if mode == "mean" else features.max(dim=1).values
    valid = mask.to(features.dtype).unsqueeze(-1)
    if mode == "mean":
        return (features * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)
    return features.masked_fill(valid == 0, float("-inf")).max(dim=1).values


class PooledEncoder(nn.Module):
    """``module(batch)`` pooled to (B, D). ``forward(batch, mask=None)``; the module's output may
    be a tensor, a tuple (first item used) or an object with ``last_hidden_state``."""

    def __init__(self, module: nn.Module, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling}")
        self.module, self.pooling = module, pooling

    def forward(self, batch, mask: torch.Tensor | None = None) -> torch.Tensor:
        output = self.module(batch)
        if hasattr(output, "last_hidden_state"):
            output = output.last_hidden_state
        elif isinstance(output, (tuple, list)):
            output = output[0]
        return pool(output, self.pooling, mask)


def block_list(module: nn.Module) -> nn.ModuleList:
    """The module's stack of blocks: the longest ``nn.ModuleList`` inside it (e.g.
    ``encoder.layer`` of a Hugging Face model, ``layers`` of ``nn.TransformerEncoder``)."""
    lists = [child for child in module.modules() if isinstance(child, nn.ModuleList)]
    if not lists:
        raise ValueError("the module has no nn.ModuleList of blocks to freeze by position")
    return max(lists, key=len)


def freeze_all_but_last(module: nn.Module, n_blocks: int) -> int:
    """Freeze every parameter of ``module``, then unfreeze the last ``n_blocks`` blocks of
    :func:`block_list` (the input layers, the earlier blocks and anything outside the stack
    stay frozen). Returns the number of trainable parameters left."""
    blocks = block_list(module)
    if not 0 <= n_blocks <= len(blocks):
        raise ValueError(f"n_blocks must be in [0, {len(blocks)}], got {n_blocks}")
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for block in list(blocks)[len(blocks) - n_blocks:]:
        for parameter in block.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
