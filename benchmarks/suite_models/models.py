"""Seven model families, each taking MFCCs (batch, 1, 40, 241) as the bundled voice model does.

Sizes are those of small deployed speech models of each kind (widths and depths like published
KWS / VAD / speaker models: DS-CNN-M, GE2E's 3-layer LSTM, a narrower ECAPA-TDNN, Conformer-S's
encoder width), so fp32 at batch 1 takes milliseconds on ONNX Runtime CPU, not fractions of one.
``width`` scales every channel count (``tiny``: a quarter, for the fast test).

``lr``: a family's own learning rate where the default (train.LR) does not train it.

kind: what the output is - "probability" (batch, 1), "frames" (per-frame probabilities,
(batch, frames)) or "embedding" (batch, dim), L2-normalised. Embedding models are trained
through a linear head (``head``) that the export leaves out.
"""
from __future__ import annotations

import torch
from torch import nn

N_MFCC, N_FRAMES = 40, 241


def _w(c: int, width: float) -> int:
    return max(4, int(round(c * width / 4)) * 4)  # multiples of 4 (heads, SE reduction)


class CnnNorm(nn.Module):
    """A VGG-style CNN whose per-coefficient normalisation (Sub, Div) is inside the graph."""
    kind = "probability"

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, width: float = 1.0):
        super().__init__()
        c1, c2, c3 = _w(32, width), _w(64, width), _w(128, width)
        self.register_buffer("mean", mean.reshape(1, 1, N_MFCC, 1))
        self.register_buffer("std", std.reshape(1, 1, N_MFCC, 1))
        def block(cin: int, cout: int) -> list[nn.Module]:  # BatchNorm before the ReLU: folded by the export
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, c1), nn.MaxPool2d(2), *block(c1, c2), nn.MaxPool2d(2), *block(c2, c3), *block(c3, c3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c3, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.body((x - self.mean) / self.std)))


class FrameAttentionCnn(nn.Module):
    """Conv -> ReLU -> BatchNorm (after the ReLU: not folded) x3 -> LayerNorm -> attention over the
    frames (MatMuls of two activations) -> a probability per frame (a VAD-style frame tagger)."""
    kind = "frames"

    def __init__(self, width: float = 1.0):
        super().__init__()
        c, a = _w(256, width), _w(64, width)
        self.convs = nn.ModuleList([nn.Conv1d(N_MFCC, c, 5, padding=2), nn.Conv1d(c, c, 5, padding=2),
                                    nn.Conv1d(c, c, 5, padding=2)])
        self.bns = nn.ModuleList([nn.BatchNorm1d(c) for _ in self.convs])
        self.norm = nn.LayerNorm(c)
        self.q = nn.Linear(c, a)
        self.k = nn.Linear(c, a)
        self.out = nn.Linear(c, 1)
        self.scale = a ** -0.5

    def forward(self, x):
        h = x[:, 0] / 20.0
        for conv, bn in zip(self.convs, self.bns):
            h = bn(torch.relu(conv(h)))
        h = self.norm(h.transpose(1, 2))                       # (B, T, C)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) * self.scale, dim=-1)
        h = h + att @ h
        return torch.sigmoid(self.out(h))[..., 0]               # (B, T)


class LstmEncoder(nn.Module):
    """A GE2E-style speaker encoder: a 3-layer LSTM, a projection, an embedding output."""
    kind = "embedding"

    def __init__(self, width: float = 1.0):
        super().__init__()
        h = _w(192, width)
        self.lstm = nn.LSTM(N_MFCC, h, num_layers=3, batch_first=True)
        self.proj = nn.Linear(h, _w(128, width))
        self.head = nn.Linear(_w(128, width), 1)

    def embed(self, x):  # frames stacked by 2 (241 -> 120 steps of 20 ms)
        out, _ = self.lstm(nn.functional.avg_pool1d(x[:, 0], 2).transpose(1, 2) / 20.0)
        return nn.functional.normalize(self.proj(out[:, -1]), dim=-1)

    def forward(self, x):
        return self.embed(x)


class GruClassifier(nn.Module):
    """A 2-layer GRU keyword/speaker classifier, mean over time."""
    kind = "probability"

    def __init__(self, width: float = 1.0):
        super().__init__()
        h = _w(192, width)
        self.gru = nn.GRU(N_MFCC, h, num_layers=2, batch_first=True)
        self.fc = nn.Linear(h, 1)

    def forward(self, x):
        out, _ = self.gru(nn.functional.avg_pool1d(x[:, 0], 2).transpose(1, 2) / 20.0)
        return torch.sigmoid(self.fc(out.mean(1)))


def _dsconv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU())


class DsCnn(nn.Module):
    """A depthwise-separable CNN (DS-CNN keyword spotting, medium width)."""
    kind = "probability"

    def __init__(self, width: float = 1.0):
        super().__init__()
        c1, c2 = _w(96, width), _w(192, width)
        self.stem = nn.Sequential(nn.Conv2d(1, c1, (10, 4), 2, (5, 1)), nn.BatchNorm2d(c1), nn.ReLU())
        self.blocks = nn.Sequential(_dsconv(c1, c1, 1), _dsconv(c1, c2, 2), _dsconv(c2, c2, 1),
                                    _dsconv(c2, c2, 1), _dsconv(c2, c2, 1))
        self.fc = nn.Linear(c2, 1)

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


class TdnnSeBlock(nn.Module):
    """1x1 -> dilated k3 -> 1x1 (each Conv, ReLU, BatchNorm) -> squeeze-excitation, residual."""

    def __init__(self, c: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c, c, 1), nn.ReLU(), nn.BatchNorm1d(c),
            nn.Conv1d(c, c, 3, padding=dilation, dilation=dilation), nn.ReLU(), nn.BatchNorm1d(c),
            nn.Conv1d(c, c, 1), nn.ReLU(), nn.BatchNorm1d(c))
        self.se = SEBlock(c)

    def forward(self, h):
        return h + self.se(self.body(h))


class EcapaLike(nn.Module):
    """An ECAPA-like TDNN (C=192): SE-TDNN blocks with dilations 2, 3, 4, their outputs
    concatenated, attentive statistics pooling, an embedding."""
    kind = "embedding"

    def __init__(self, width: float = 1.0):
        super().__init__()
        c, e = _w(192, width), _w(128, width)
        self.tdnn1 = nn.Sequential(nn.Conv1d(N_MFCC, c, 5, padding=2), nn.ReLU(), nn.BatchNorm1d(c))
        self.blocks = nn.ModuleList([TdnnSeBlock(c, d) for d in (2, 3, 4)])
        self.mfa = nn.Sequential(nn.Conv1d(3 * c, 3 * c, 1), nn.ReLU())
        self.att = nn.Sequential(nn.Conv1d(3 * c, e, 1), nn.Tanh(), nn.Conv1d(e, 3 * c, 1))
        self.proj = nn.Linear(6 * c, e)
        self.head = nn.Linear(e, 1)

    def embed(self, x):
        h = self.tdnn1(x[:, 0] / 20.0)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        h = self.mfa(torch.cat(outs, 1))
        w = torch.softmax(self.att(h), dim=2)
        mu = (h * w).sum(2)
        sigma = torch.sqrt(((h * h) * w).sum(2) - mu * mu + 1e-5)
        return nn.functional.normalize(self.proj(torch.cat([mu, sigma], 1)), dim=-1)

    def forward(self, x):
        return self.embed(x)


class ConformerBlock(nn.Module):
    """Macaron feed-forward halves, multi-head self-attention (MatMuls of two activations), a
    depthwise conv module; each pre-LayerNorm and residual."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln = nn.ModuleList([nn.LayerNorm(d) for _ in range(5)])
        self.ff1 = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.ff2 = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, 15, padding=7, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.heads, self.d = heads, d

    def forward(self, h):
        b, t, _ = h.shape
        h = h + 0.5 * self.ff1(self.ln[0](h))
        q, k, v = self.qkv(self.ln[1](h)).chunk(3, dim=-1)
        dh = self.d // self.heads
        q, k, v = (z.reshape(b, t, self.heads, dh).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(2, 3) / dh ** 0.5, dim=-1)
        h = h + self.o((att @ v).transpose(1, 2).reshape(b, t, self.d))
        c = nn.functional.glu(self.pw1(self.ln[2](h).transpose(1, 2)), dim=1)
        h = h + self.pw2(nn.functional.silu(self.bn(self.dw(c)))).transpose(1, 2)
        h = h + 0.5 * self.ff2(self.ln[3](h))
        return self.ln[4](h)


class ConformerLike(nn.Module):
    """Conv subsampling (x4 in time), then two conformer blocks (d=144, 4 heads: Conformer-S's
    width), mean pooling, a probability."""
    kind = "probability"
    lr = 1e-3  # without warm-up, attention stays at chance (loss 0.692 after 60 steps) at the default 3e-3

    def __init__(self, width: float = 1.0, d: int = 144, heads: int = 4):
        super().__init__()
        d, s = _w(d, width), _w(64, width)
        self.sub = nn.Sequential(nn.Conv2d(1, s, 3, 2), nn.ReLU(), nn.Conv2d(s, s, 3, 2), nn.ReLU())
        self.inp = nn.Linear(s * 9, d)
        self.blocks = nn.Sequential(ConformerBlock(d, heads), ConformerBlock(d, heads))
        self.fc = nn.Linear(d, 1)

    def forward(self, x):
        h = self.sub(x / 20.0)                                  # (B, S, 9, T')
        b, c, f, t = h.shape
        h = self.blocks(self.inp(h.permute(0, 3, 1, 2).reshape(b, t, c * f)))
        return torch.sigmoid(self.fc(h.mean(1)))


def build(name: str, mean: torch.Tensor, std: torch.Tensor, width: float = 1.0) -> nn.Module:
    return {"cnn_norm": lambda: CnnNorm(mean, std, width), "frame_attention": lambda: FrameAttentionCnn(width),
            "lstm_encoder": lambda: LstmEncoder(width), "gru": lambda: GruClassifier(width),
            "dscnn": lambda: DsCnn(width), "ecapa": lambda: EcapaLike(width),
            "conformer": lambda: ConformerLike(width)}[name]()


NAMES = ("cnn_norm", "frame_attention", "lstm_encoder", "gru", "dscnn", "ecapa", "conformer")
