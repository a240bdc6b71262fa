"""Tiny models for the int8 search's later trials (classes of ops, greedy fallback, dynamic
quantisation, the plain answer): exported to ONNX with a dynamic batch."""
from __future__ import annotations

from pathlib import Path

import torch


class TinyLSTM(torch.nn.Module):
    """A recurrent classifier: nearly all MACs are in the LSTM, which static QDQ leaves fp32."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = torch.nn.LSTM(16, 48, batch_first=True)
        self.fc = torch.nn.Linear(48, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return torch.sigmoid(self.fc(out[:, -1]))


class TinyAttention(torch.nn.Module):
    """Frames -> LayerNorm -> self-attention (Q K^T and weights x V: MatMuls of two activations)
    -> residual Add -> mean -> probability."""

    def __init__(self, dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.norm = torch.nn.LayerNorm(dim)
        self.q = torch.nn.Linear(dim, dim)
        self.k = torch.nn.Linear(dim, dim)
        self.v = torch.nn.Linear(dim, dim)
        self.fc = torch.nn.Linear(dim, 1)

    def forward(self, x):
        h = self.norm(x)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 4.0, dim=-1)
        h = x + att @ self.v(h)
        return torch.sigmoid(self.fc(h.mean(1)))


def export(module: torch.nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    x = torch.zeros(2, *shape)
    torch.onnx.export(module.eval(), (x,), str(path), input_names=["x"], output_names=["p"],
                      dynamic_axes={"x": {0: "batch"}, "p": {0: "batch"}}, opset_version=17, dynamo=False)
    return path
