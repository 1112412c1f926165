"""The projection head the contrastive loss sees (Khosla et al. 2020; Chen et al. 2020)."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class ProjectionHead(nn.Module):
    """``Linear(in, hidden) → ReLU → Linear(hidden, out)``, L2-normalised output.

    The loss is computed on the head's output; the embeddings to probe are taken before it
    (the encoder's output), as in SupCon and SimCLR.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None):
        super().__init__()
        hidden = hidden_dim or in_dim
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, out_dim))

    def forward(self, features):
        return F.normalize(self.layers(features), dim=-1)
