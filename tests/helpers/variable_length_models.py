"""Tiny variable-length models built in code (MODEL arguments ``file.py:callable`` for export):
a CNN ending in global average pooling over time, a GRU over frames, and a model that is *not*
length-independent once traced (it divides by the traced length) so the per-length check can fail."""
from __future__ import annotations

import torch
from torch import nn

FEATURES = 8  # features per frame


class GapCnn(nn.Module):
    """(N, 1, 8, T) -> (N, 1): conv, ReLU, global average pooling over frequency and time, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return torch.sigmoid(self.head(h))


class GruFrames(nn.Module):
    """(N, T, 8) -> (N, 1): a GRU over the frames, the last hidden state, a linear score."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.gru = nn.GRU(FEATURES, 6, batch_first=True)
        self.head = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return torch.sigmoid(self.head(h[-1]))


class TracedLength(nn.Module):
    """(N, 1, 8, T) -> (N, 1): sums over time and divides by int(T), which the tracer freezes to the
    export length: right at that length, wrong at every other."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(FEATURES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.sum(dim=3) / int(x.shape[3])
        return self.head(mean.flatten(1))


def gap_cnn() -> nn.Module:
    return GapCnn().eval()


def gru_frames() -> nn.Module:
    return GruFrames().eval()


def traced_length() -> nn.Module:
    return TracedLength().eval()
