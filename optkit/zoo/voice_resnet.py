"""The reference voice-verification model: a Bottleneck ResNet with a sigmoid Predictor head.

Input ``input_mfcc`` (batch, 1, 40, 241): 40 MFCC coefficients x 241 frames (2.41 s at a 10 ms
hop). Output ``output_wvp`` (batch, 1): the probability that the speaker is the enrolled one,
accepted at ``DECISION_THRESHOLD``.

The stem keeps full resolution (3x3 conv, stride 1, no max-pool) as speaker-verification ResNets
do; with ``num_blocks=[8, 8, 36, 3]`` and ``base_width=64`` that is 38.8 GMAC per sample, the
production size of the reference user (``voice-resnet-seed``).
"""
from __future__ import annotations

import torch
from torch import nn

DECISION_THRESHOLD = 0.5
INPUT_NAME = "input_mfcc"
OUTPUT_NAME = "output_wvp"
INPUT_SHAPE = (1, 40, 241)  # per sample, without batch


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.shortcut(x))


class Predictor(nn.Module):
    """Pooled embedding -> hidden layer -> one logit -> sigmoid probability."""

    def __init__(self, in_features: int, hidden: int = 128):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(x), 1)
        return torch.sigmoid(self.fc2(self.relu(self.fc1(x))))


class VoiceResNet(nn.Module):
    def __init__(self, num_blocks: tuple[int, ...] = (2, 2, 2, 2), base_width: int = 16, hidden: int = 128):
        super().__init__()
        self.num_blocks = tuple(num_blocks)
        self.base_width = base_width
        self.conv1 = nn.Conv2d(1, base_width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        in_planes = base_width
        layers = []
        for i, n in enumerate(num_blocks):
            planes = base_width * (2**i)
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * Bottleneck.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.predictor = Predictor(in_planes, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.predictor(x)


def mfcc_like_noise(n: int, generator: torch.Generator) -> torch.Tensor:
    """Random inputs at the scale of real MFCC windows: the bundled calibration set's
    per-coefficient standard deviation falls from about 60 (c0) to about 3 (c39), roughly
    geometrically; unit-variance noise would leave an untrained model's statistics far from what
    it sees on speech."""
    std = 60.0 * (3.0 / 60.0) ** (torch.arange(INPUT_SHAPE[1], dtype=torch.float32) / (INPUT_SHAPE[1] - 1))
    return torch.randn(n, *INPUT_SHAPE, generator=generator) * std[None, None, :, None]


def init_nondegenerate_bn(model: nn.Module, seed: int = 0, mfcc_scale: bool = False) -> nn.Module:
    """Give an untrained model BatchNorm statistics that are not the identity (mean 0, var 1).

    A freshly initialised ResNet in eval mode has every BN as a no-op and residual branches that
    grow without bound, so its outputs saturate to 0 or 1 and verification would be vacuous.
    Estimating the running statistics from a few random batches (like a short calibration of BN)
    keeps activations well scaled and the output probability away from the rails. With
    ``mfcc_scale`` the batches have the scale of real MFCC windows (:func:`mfcc_like_noise`).
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            # Damp the last BN of each residual branch, as "zero-init residual" does, but not to 0.
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)
    was_training = model.training
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(mfcc_like_noise(4, g) if mfcc_scale else torch.randn(4, *INPUT_SHAPE, generator=g))
    model.train(was_training)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model


def macs_per_sample(model: nn.Module) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one input sample."""
    total = 0
    hooks = []

    def conv_hook(mod: nn.Conv2d, inp, out):  # noqa: ANN001
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += int(out[0].numel() * k)

    def linear_hook(mod: nn.Linear, inp, out):  # noqa: ANN001
        nonlocal total
        total += mod.in_features * mod.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *INPUT_SHAPE))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total
