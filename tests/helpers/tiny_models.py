"""User-style model factories for export tests (loaded as path/file.py:callable)."""
import torch
from torch import nn


def tiny_voice():
    from optkit.zoo.voice_resnet import VoiceResNet, init_nondegenerate_bn

    torch.manual_seed(0)
    return init_nondegenerate_bn(VoiceResNet(num_blocks=(1, 1, 1, 1), base_width=4, hidden=16), seed=0).eval()


def tiny_voice_training_mode():
    return tiny_voice().train()


class Affine(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


def affine():
    torch.manual_seed(0)
    return Affine().eval()


def affine_half():
    """A model converted with .half(): float16 parameters."""
    return affine().half()


def not_a_module():
    return 42


def broken():
    raise RuntimeError("factory exploded")
