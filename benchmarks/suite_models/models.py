"""Seven model families, each taking MFCCs (batch, 1, 40, 241) as the bundled voice model does.

kind: what the output is - "probability" (batch, 1), "frames" (per-frame probabilities,
(batch, frames)) or "embedding" (batch, dim), L2-normalised. Embedding models are trained
through a linear head (``head``) that the export leaves out.
"""
from __future__ import annotations

import torch
from torch import nn

N_MFCC, N_FRAMES = 40, 241


class CnnNorm(nn.Module):
    """A CNN whose per-coefficient normalisation (Sub, Div) is inside the graph."""
    kind = "probability"

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, 1, N_MFCC, 1))
        self.register_buffer("std", std.reshape(1, 1, N_MFCC, 1))
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.body((x - self.mean) / self.std)))


class FrameAttentionCnn(nn.Module):
    """Conv -> ReLU -> BatchNorm (after the ReLU: not folded) -> LayerNorm -> attention over the
    frames (MatMuls of two activations) -> a probability per frame."""
    kind = "frames"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(N_MFCC, 64, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(64)
        self.conv2 = nn.Conv1d(64, 64, 5, padding=2)
        self.bn2 = nn.BatchNorm1d(64)
        self.norm = nn.LayerNorm(64)
        self.q = nn.Linear(64, 32)
        self.k = nn.Linear(64, 32)
        self.out = nn.Linear(64, 1)

    def forward(self, x):
        h = self.bn1(torch.relu(self.conv1(x[:, 0] / 20.0)))
        h = self.bn2(torch.relu(self.conv2(h)))
        h = self.norm(h.transpose(1, 2))                       # (B, T, C)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 32 ** 0.5, dim=-1)
        h = h + att @ h
        return torch.sigmoid(self.out(h))[..., 0]               # (B, T)


class LstmEncoder(nn.Module):
    """An LSTM speaker encoder with an embedding output."""
    kind = "embedding"

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MFCC, 64, batch_first=True)
        self.proj = nn.Linear(64, 32)
        self.head = nn.Linear(32, 1)

    def embed(self, x):  # frames stacked by 4 (241 -> 60 steps): a minute of training on 2 cores
        out, _ = self.lstm(nn.functional.avg_pool1d(x[:, 0], 4).transpose(1, 2) / 20.0)
        return nn.functional.normalize(self.proj(out[:, -1]), dim=-1)

    def forward(self, x):
        return self.embed(x)


class GruClassifier(nn.Module):
    kind = "probability"

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(N_MFCC, 64, batch_first=True)
        self.fc = nn.Linear(64, 1)

    def forward(self, x):
        out, _ = self.gru(nn.functional.avg_pool1d(x[:, 0], 4).transpose(1, 2) / 20.0)
        return torch.sigmoid(self.fc(out.mean(1)))


def _dsconv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU())


class DsCnn(nn.Module):
    """A depthwise-separable CNN (keyword-spotting style)."""
    kind = "probability"

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(_dsconv(32, 64, 2), _dsconv(64, 64, 1), _dsconv(64, 64, 2))
        self.fc = nn.Linear(64, 1)

    def forward(self, x):
        h = self.blocks(self.stem(x / 20.0))
        return torch.sigmoid(self.fc(h.mean((2, 3))))


class SEBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // 4), nn.Linear(c // 4, c)

    def forward(self, h):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(h.mean(2)))))
        return h * s.unsqueeze(2)


class EcapaLike(nn.Module):
    """A 1-D TDNN with squeeze-excitation and attentive statistics pooling: an embedding."""
    kind = "embedding"

    def __init__(self, c: int = 64):
        super().__init__()
        self.tdnn1 = nn.Sequential(nn.Conv1d(N_MFCC, c, 5, padding=2), nn.ReLU(), nn.BatchNorm1d(c))
        self.tdnn2 = nn.Sequential(nn.Conv1d(c, c, 3, padding=2, dilation=2), nn.ReLU(), nn.BatchNorm1d(c))
        self.se = SEBlock(c)
        self.tdnn3 = nn.Sequential(nn.Conv1d(c, c, 3, padding=3, dilation=3), nn.ReLU(), nn.BatchNorm1d(c))
        self.att = nn.Sequential(nn.Conv1d(c, 32, 1), nn.Tanh(), nn.Conv1d(32, c, 1))
        self.proj = nn.Linear(2 * c, 32)
        self.head = nn.Linear(32, 1)

    def embed(self, x):
        h = self.tdnn1(x[:, 0] / 20.0)
        h = h + self.se(self.tdnn2(h))
        h = self.tdnn3(h)
        w = torch.softmax(self.att(h), dim=2)
        mu = (h * w).sum(2)
        sigma = torch.sqrt(((h * h) * w).sum(2) - mu * mu + 1e-5)
        return nn.functional.normalize(self.proj(torch.cat([mu, sigma], 1)), dim=-1)

    def forward(self, x):
        return self.embed(x)


class ConformerLike(nn.Module):
    """Conv subsampling, then one block: LayerNorm, multi-head self-attention (MatMuls of two
    activations), a depthwise conv module and a feed-forward, each residual; mean pooling."""
    kind = "probability"

    def __init__(self, d: int = 64, heads: int = 4):
        super().__init__()
        self.sub = nn.Sequential(nn.Conv2d(1, 16, 3, 2), nn.ReLU(), nn.Conv2d(16, 16, 3, 2), nn.ReLU())
        self.inp = nn.Linear(16 * 9, d)
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)
        self.dw = nn.Conv1d(d, d, 7, padding=3, groups=d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.fc = nn.Linear(d, 1)
        self.heads, self.d = heads, d

    def forward(self, x):
        h = self.sub(x / 20.0)                                  # (B, 16, 9, T')
        b, c, f, t = h.shape
        h = self.inp(h.permute(0, 3, 1, 2).reshape(b, t, c * f))
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        dh = self.d // self.heads
        q, k, v = (z.reshape(b, t, self.heads, dh).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(2, 3) / dh ** 0.5, dim=-1)
        h = h + self.o((att @ v).transpose(1, 2).reshape(b, t, self.d))
        h = h + self.dw(self.ln2(h).transpose(1, 2)).transpose(1, 2)
        h = h + self.ff(self.ln3(h))
        return torch.sigmoid(self.fc(h.mean(1)))


def build(name: str, mean: torch.Tensor, std: torch.Tensor) -> nn.Module:
    return {"cnn_norm": lambda: CnnNorm(mean, std), "frame_attention": FrameAttentionCnn,
            "lstm_encoder": LstmEncoder, "gru": GruClassifier, "dscnn": DsCnn, "ecapa": EcapaLike,
            "conformer": ConformerLike}[name]()


NAMES = ("cnn_norm", "frame_attention", "lstm_encoder", "gru", "dscnn", "ecapa", "conformer")
